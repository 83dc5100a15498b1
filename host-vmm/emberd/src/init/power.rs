//! How init mode ends. PID 1 must never return: the kernel would panic with "Attempted to
//! kill init". So the end is a decision ([`plan`]) carried out by a [`Machine`]: power off
//! or reboot with `reboot(2)` after `sync`, or, when `emberd init` runs as an ordinary
//! process (tests, a try-out on a host), exit instead of taking the host down. Tests give
//! a recording machine and observe the decision.

use std::time::Duration;

use super::config::OnExit;

/// How the work ended.
#[derive(Debug, PartialEq)]
pub enum Ending {
    /// The worker drained or the self-test passed.
    Done,
    /// The self-test failed: reported already, not fatal to init.
    Failed,
    /// Init could not go on; the message is the one line to print.
    Fatal(String),
}

/// What the machine does last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    PowerOff,
    Reboot,
    /// Not PID 1: end the process with this status.
    Exit(u8),
}

/// The decision: wait this long (so a person can read the console), then act.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub delay: Duration,
    pub action: Action,
}

/// The end for `ending`: `on_exit` when PID 1, an exit status otherwise; only a fatal
/// error waits `fatal_delay`.
pub fn plan(ending: &Ending, on_exit: OnExit, fatal_delay: Duration, pid1: bool) -> Plan {
    let delay = match ending {
        Ending::Fatal(_) => fatal_delay,
        Ending::Done | Ending::Failed => Duration::ZERO,
    };
    let action = match (pid1, on_exit, ending) {
        (true, OnExit::PowerOff, _) => Action::PowerOff,
        (true, OnExit::Reboot, _) => Action::Reboot,
        (false, _, Ending::Done) => Action::Exit(0),
        (false, _, Ending::Failed | Ending::Fatal(_)) => Action::Exit(1),
    };
    Plan { delay, action }
}

/// What carries out a plan.
pub trait Machine {
    fn say(&mut self, line: &str);
    fn wait(&mut self, delay: Duration);
    /// Powers off or reboots (never returns when that works) or exits.
    fn act(&mut self, action: Action);
}

/// Prints the fatal line (one, `emberd: fatal: ...`) and what happens next, waits, acts.
pub fn finish(ending: &Ending, plan: &Plan, machine: &mut dyn Machine) {
    let what = match plan.action {
        Action::PowerOff => "powering off".to_owned(),
        Action::Reboot => "rebooting".to_owned(),
        Action::Exit(status) => format!("exiting with status {status} (not PID 1)"),
    };
    if let Ending::Fatal(message) = ending {
        machine.say(&format!("emberd: fatal: {message}"));
    }
    if plan.delay.is_zero() {
        machine.say(&format!("emberd: {what}"));
    } else {
        machine.say(&format!("emberd: {what} in {:?}", plan.delay));
        machine.wait(plan.delay);
    }
    machine.act(plan.action);
}

/// The real machine: the console, `sleep`, `sync` + `reboot(2)` or `exit`.
pub struct Real;

impl Machine for Real {
    fn say(&mut self, line: &str) {
        super::console::line(line);
    }

    fn wait(&mut self, delay: Duration) {
        std::thread::sleep(delay);
    }

    fn act(&mut self, action: Action) {
        use nix::sys::reboot::{reboot, RebootMode};
        let mode = match action {
            Action::PowerOff => RebootMode::RB_POWER_OFF,
            Action::Reboot => RebootMode::RB_AUTOBOOT,
            Action::Exit(status) => std::process::exit(status.into()),
        };
        nix::unistd::sync();
        let Err(errno) = reboot(mode);
        // PID 1 may not exit: say why and stay.
        super::console::line(&format!(
            "emberd: fatal: reboot(2) failed: {errno}; halting here"
        ));
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        lines: Vec<String>,
        waited: Vec<Duration>,
        acted: Vec<Action>,
    }

    impl Machine for Recorder {
        fn say(&mut self, line: &str) {
            self.lines.push(line.to_owned());
        }
        fn wait(&mut self, delay: Duration) {
            self.waited.push(delay);
        }
        fn act(&mut self, action: Action) {
            self.acted.push(action);
        }
    }

    const DELAY: Duration = Duration::from_secs(10);

    #[test]
    fn pid1_powers_off_or_reboots_as_configured_and_waits_only_after_a_fatal_error() {
        let fatal = Ending::Fatal("no CA".into());
        assert_eq!(
            plan(&fatal, OnExit::PowerOff, DELAY, true),
            Plan {
                delay: DELAY,
                action: Action::PowerOff
            }
        );
        assert_eq!(
            plan(&fatal, OnExit::Reboot, DELAY, true).action,
            Action::Reboot
        );
        assert_eq!(
            plan(&Ending::Done, OnExit::Reboot, DELAY, true),
            Plan {
                delay: Duration::ZERO,
                action: Action::Reboot
            }
        );
        assert_eq!(
            plan(&Ending::Failed, OnExit::PowerOff, DELAY, true).action,
            Action::PowerOff
        );
    }

    #[test]
    fn an_ordinary_process_exits_instead_of_taking_the_host_down() {
        assert_eq!(
            plan(&Ending::Done, OnExit::PowerOff, DELAY, false).action,
            Action::Exit(0)
        );
        assert_eq!(
            plan(&Ending::Failed, OnExit::Reboot, DELAY, false).action,
            Action::Exit(1)
        );
        assert_eq!(
            plan(
                &Ending::Fatal("x".into()),
                OnExit::Reboot,
                Duration::ZERO,
                false
            ),
            Plan {
                delay: Duration::ZERO,
                action: Action::Exit(1)
            }
        );
    }

    #[test]
    fn a_fatal_error_prints_one_line_waits_then_acts() {
        let ending = Ending::Fatal("reading /etc/ember/ca.pem: not found".into());
        let plan = plan(&ending, OnExit::Reboot, DELAY, true);
        let mut machine = Recorder::default();
        finish(&ending, &plan, &mut machine);
        assert_eq!(
            machine.lines,
            [
                "emberd: fatal: reading /etc/ember/ca.pem: not found",
                "emberd: rebooting in 10s"
            ]
        );
        assert_eq!(machine.waited, [DELAY]);
        assert_eq!(machine.acted, [Action::Reboot]);

        let mut machine = Recorder::default();
        finish(
            &Ending::Done,
            &super::plan(&Ending::Done, OnExit::PowerOff, DELAY, true),
            &mut machine,
        );
        assert_eq!(machine.lines, ["emberd: powering off"]);
        assert!(machine.waited.is_empty());
        assert_eq!(machine.acted, [Action::PowerOff]);
    }
}
