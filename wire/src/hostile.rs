//! Test only: the hostile-guest modes guest-init plays when it was booted with
//! [`crate::boot::flags::TEST_FRAMES`] and its function's environment sets [`ENV`] to a
//! mode's name. They let host tests attack the host from inside a real VM. Without the
//! boot flag the variable is an ordinary environment variable.

/// The function environment variable that selects a mode (read at `Load`).
pub const ENV: &str = "EMBER_TEST_HOSTILE";

/// What the guest does instead of serving the invocations after its init phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Stops reading the next connection at its first byte, advertises zero credit and
    /// parks: the host's request write can never finish.
    Stall,
    /// Stops reading the next connection at its first byte and spins in ring 3 forever.
    StallSpin,
    /// At the next invocation: stops taking packets (its RX buffers fill up) and sends
    /// packets to host ports that do not exist without end, so the host must queue a reset
    /// for each.
    FloodControl,
    /// At each invocation: writes [`SERIAL_FLOOD_LINES`] serial lines, then serves it.
    FloodSerial,
    /// At the next invocation: offers an impossible TX available index and kicks.
    BadRing,
}

/// Lines [`Mode::FloodSerial`] writes per invocation.
pub const SERIAL_FLOOD_LINES: u32 = 1_000;

const NAMES: [(Mode, &str); 5] = [
    (Mode::Stall, "stall"),
    (Mode::StallSpin, "stall-spin"),
    (Mode::FloodControl, "flood-control"),
    (Mode::FloodSerial, "flood-serial"),
    (Mode::BadRing, "bad-ring"),
];

impl Mode {
    pub fn parse(name: &str) -> Option<Mode> {
        NAMES.iter().find(|(_, n)| *n == name).map(|(m, _)| *m)
    }

    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(m, _)| *m == self)
            .map_or("", |(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (mode, name) in NAMES {
            assert_eq!(Mode::parse(name), Some(mode));
            assert_eq!(mode.name(), name);
        }
        assert_eq!(Mode::parse("STALL"), None);
    }
}
