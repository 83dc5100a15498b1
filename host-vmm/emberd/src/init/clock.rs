//! The system clock, before anything checks a certificate's validity. Debian's kernel
//! usually sets it from the hardware clock itself (`CONFIG_RTC_HCTOSYS`, which
//! `/sys/class/rtc/rtc0/hctosys` reports); otherwise init reads `/dev/rtc0`
//! (`RTC_RD_TIME`, which the RTC keeps in UTC on Linux machines) and sets it with
//! `clock_settime`. A clock before [`NOT_BEFORE`] is wrong for sure (this emberd did not
//! exist yet): like systemd, init then moves it forward to that time and warns, so that
//! TLS has a chance (certificates issued before then check) and the operator knows why
//! newer ones may not.

use std::time::{SystemTime, UNIX_EPOCH};

use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// The earliest plausible time, in seconds since the epoch: the build's
/// `SOURCE_DATE_EPOCH` (reproducible builds set it to the last commit's time), else
/// 2026-12-01 00:00:00 UTC, when this rule was written.
const NOT_BEFORE: i64 = match option_env!("SOURCE_DATE_EPOCH") {
    Some(text) => parse_seconds(text),
    None => 1_796_083_200,
};

const fn parse_seconds(text: &str) -> i64 {
    let bytes = text.as_bytes();
    assert!(!bytes.is_empty(), "SOURCE_DATE_EPOCH is empty");
    let mut seconds = 0i64;
    let mut i = 0;
    while i < bytes.len() {
        assert!(
            bytes[i].is_ascii_digit(),
            "SOURCE_DATE_EPOCH is not a number"
        );
        seconds = seconds * 10 + (bytes[i] - b'0') as i64;
        i += 1;
    }
    seconds
}

const RTC: &str = "/dev/rtc0";

/// `struct rtc_time` of `<linux/rtc.h>`: `struct tm`'s first nine fields.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
struct RtcTime {
    sec: libc::c_int,
    min: libc::c_int,
    hour: libc::c_int,
    /// 1 to 31.
    mday: libc::c_int,
    /// 0 to 11.
    mon: libc::c_int,
    /// Years since 1900.
    year: libc::c_int,
    wday: libc::c_int,
    yday: libc::c_int,
    isdst: libc::c_int,
}

/// `_IOR('p', 0x09, struct rtc_time)`.
const RTC_RD_TIME: libc::c_ulong = 0x8024_7009;

/// What to do with the clock.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// It is plausible already.
    Keep,
    /// Set it to the hardware clock's time.
    FromRtc(i64),
    /// Both are implausible: move it forward to [`NOT_BEFORE`].
    Advance,
}

/// The rule: a clock at or after `not_before` is right, else the RTC's if that is.
fn decide(now: i64, rtc: Option<i64>, not_before: i64) -> Decision {
    match rtc {
        _ if now >= not_before => Decision::Keep,
        Some(rtc) if rtc >= not_before => Decision::FromRtc(rtc),
        _ => Decision::Advance,
    }
}

/// Checks the clock, sets it if it must, and says what it is and where it came from.
pub fn set() {
    let now = system_seconds();
    let rtc = if now >= NOT_BEFORE {
        Ok(None)
    } else {
        read_rtc().map_err(|e| format!("{RTC}: {e}"))
    };
    match decide(now, rtc.as_ref().ok().copied().flatten(), NOT_BEFORE) {
        Decision::Keep => {
            let by_kernel = std::fs::read_to_string("/sys/class/rtc/rtc0/hctosys")
                .is_ok_and(|text| text.trim() == "1");
            let source = if by_kernel {
                "set by the kernel from the hardware clock rtc0"
            } else {
                "already set"
            };
            log::info!("clock: {}, {source}", format(now));
        }
        Decision::FromRtc(seconds) => match set_system(seconds) {
            Ok(()) => log::info!("clock: {}, from the hardware clock {RTC}", format(seconds)),
            Err(e) => log::warn!(
                "clock: setting it to the hardware clock's {}: {e}; it says {}",
                format(seconds),
                format(now)
            ),
        },
        Decision::Advance => {
            let found = match rtc {
                Ok(Some(seconds)) => format!("the hardware clock says {}", format(seconds)),
                Ok(None) => format!(
                    "the hardware clock holds no valid time and the clock says {}",
                    format(now)
                ),
                Err(e) => format!("no hardware clock ({e}) and the clock says {}", format(now)),
            };
            let floor = format(NOT_BEFORE);
            let result = set_system(NOT_BEFORE).map_or_else(
                |e| format!("setting the clock to that failed ({e})"),
                |()| "the clock is set to that".to_owned(),
            );
            log::warn!(
                "clock: {found}, before this emberd was built ({floor}); {result}: TLS certificates issued since then look not yet valid until the machine's clock is set (firmware setup)"
            );
        }
    }
}

fn system_seconds() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(since) => i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The hardware clock's time; `None` if its fields are not a date.
fn read_rtc() -> std::io::Result<Option<i64>> {
    use std::os::fd::AsRawFd;
    let rtc = std::fs::File::open(RTC)?;
    let mut time = RtcTime::default();
    // SAFETY: RTC_RD_TIME writes one `struct rtc_time`, which RtcTime is.
    let result = unsafe { libc::ioctl(rtc.as_raw_fd(), RTC_RD_TIME as _, &mut time) };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rtc_seconds(&time))
}

/// Seconds since the epoch of an RTC's fields, read as UTC.
fn rtc_seconds(rtc: &RtcTime) -> Option<i64> {
    let month = Month::try_from(u8::try_from(rtc.mon + 1).ok()?).ok()?;
    let date =
        Date::from_calendar_date(rtc.year + 1900, month, u8::try_from(rtc.mday).ok()?).ok()?;
    let time = Time::from_hms(
        u8::try_from(rtc.hour).ok()?,
        u8::try_from(rtc.min).ok()?,
        u8::try_from(rtc.sec).ok()?,
    )
    .ok()?;
    Some(
        PrimitiveDateTime::new(date, time)
            .assume_utc()
            .unix_timestamp(),
    )
}

fn set_system(seconds: i64) -> std::io::Result<()> {
    // SAFETY: timespec is two integers (and padding on some targets), valid as zeroes.
    let mut time: libc::timespec = unsafe { std::mem::zeroed() };
    time.tv_sec = seconds as _;
    // SAFETY: clock_settime reads one timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &time) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `2026-12-04 18:36:32 UTC`.
fn format(seconds: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(time) => format!(
            "{} {:02}:{:02}:{:02} UTC",
            time.date(),
            time.hour(),
            time.minute(),
            time.second()
        ),
        Err(_) => format!("{seconds} seconds after the epoch"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtc(year: i32, mon: i32, mday: i32, hour: i32, min: i32, sec: i32) -> RtcTime {
        RtcTime {
            year: year - 1900,
            mon: mon - 1,
            mday,
            hour,
            min,
            sec,
            ..RtcTime::default()
        }
    }

    #[test]
    fn rtc_fields_are_utc_calendar_time() {
        assert_eq!(rtc_seconds(&rtc(1970, 1, 1, 0, 0, 0)), Some(0));
        assert_eq!(rtc_seconds(&rtc(2026, 12, 1, 0, 0, 0)), Some(1_796_083_200));
        assert_eq!(
            rtc_seconds(&rtc(2024, 2, 29, 23, 59, 59)),
            Some(1_709_251_199)
        );
        // An unset or broken RTC.
        assert_eq!(rtc_seconds(&RtcTime::default()), None);
        assert_eq!(rtc_seconds(&rtc(2025, 2, 30, 0, 0, 0)), None);
        assert_eq!(rtc_seconds(&rtc(2025, 13, 1, 0, 0, 0)), None);
        assert_eq!(rtc_seconds(&rtc(2025, 1, 1, 24, 0, 0)), None);
    }

    #[test]
    fn a_plausible_clock_is_kept_else_the_rtc_else_it_moves_forward() {
        let floor = 1_796_083_200;
        assert_eq!(decide(floor + 5, None, floor), Decision::Keep);
        assert_eq!(decide(floor, Some(0), floor), Decision::Keep);
        assert_eq!(
            decide(12, Some(floor + 60), floor),
            Decision::FromRtc(floor + 60)
        );
        assert_eq!(decide(12, Some(946_684_800), floor), Decision::Advance);
        assert_eq!(decide(12, None, floor), Decision::Advance);
    }

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(format(1_796_083_200), "2026-12-01 00:00:00 UTC");
        assert_eq!(format(1_709_251_199), "2024-02-29 23:59:59 UTC");
        assert_eq!(parse_seconds("1796083200"), 1_796_083_200);
    }

    #[test]
    fn the_ioctl_number_is_the_kernel_s() {
        // _IOC(_IOC_READ = 2, 'p', 9, size): dir << 30 | size << 16 | type << 8 | nr.
        let size = std::mem::size_of::<RtcTime>() as libc::c_ulong;
        assert_eq!(
            RTC_RD_TIME,
            2 << 30 | size << 16 | (b'p' as libc::c_ulong) << 8 | 9
        );
    }
}
