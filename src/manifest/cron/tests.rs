//! Cron: the syntax refused at its value, never-firing expressions, DST in Paris, and
//! property tests against croner.

mod unit {
    use super::super::*;
    use crate::manifest::{load_paths, ManifestError};
    use proptest::prelude::*;
    use std::path::PathBuf;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("a valid UTC time")
    }

    fn paris(expr: &str) -> CronSchedule {
        CronSchedule::new(expr, Some(chrono_tz::Europe::Paris)).expect("parses")
    }

    /// The starts of `s` in [from, to), in order.
    fn starts(s: &CronSchedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from - TimeDelta::seconds(1);
        while let Some(n) = s.next(t) {
            if n >= to {
                break;
            }
            out.push(n);
            t = n;
        }
        out
    }

    fn case_problems(name: &str) -> (String, Vec<String>) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/cases/cron-fields")
            .join(name);
        assert!(
            path.is_file(),
            "{} is missing: this test needs the shared cron cases",
            path.display()
        );
        match load_paths(std::slice::from_ref(&path)) {
            Err(ManifestError::Invalid(p)) => (
                path.display().to_string(),
                p.iter().map(|p| p.to_string()).collect(),
            ),
            Ok(_) => panic!("{} loaded, but it must be refused", path.display()),
            Err(e) => panic!("{}: unexpected error {e}", path.display()),
        }
    }

    #[test]
    fn a_quartz_pattern_with_seconds_is_refused_at_its_cron_value() {
        let (file, p) = case_problems("sched-6-fields.yaml");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(&format!(
                "{file}:9:35: cron '0 0 8 * * MON' does not parse: it has 6 field(s)"
            )),
            "{p:?}"
        );
        assert!(p[0].contains("did you mean \"0 8 * * MON\"?"), "{p:?}");
    }

    #[test]
    fn a_pattern_with_seconds_and_a_year_is_refused_at_its_cron_value() {
        let (file, p) = case_problems("sched-7-fields.yaml");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(&format!(
                "{file}:10:35: cron '0 0 8 * * MON 2026' does not parse: it has 7 field(s)"
            )),
            "{p:?}"
        );
        assert!(p[0].contains("did you mean \"0 8 * * MON\"?"), "{p:?}");
    }

    #[test]
    fn an_eventbridge_pattern_with_a_trailing_year_is_refused_at_its_cron_value() {
        let (file, p) = case_problems("sched-eventbridge-style.yaml");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(&format!(
                "{file}:10:35: cron '0 8 * * MON-FRI *' does not parse: it has 6 field(s)"
            )),
            "{p:?}"
        );
        assert!(p[0].contains("did you mean \"0 8 * * MON-FRI\"?"), "{p:?}");
    }

    const ZONED: &str = "name: web
environment: production
region: us-east-1
launch: { ami: ami-12345678, instance_types: [m6i.large] }
capacity: { min: 1, max: 10 }
scaling:
  policies:
    - scheduled: { cron: \"0 8 * * *\", timezone: Europe/Paris, duration: 1h, min: 6 }
";

    fn load_problems(text: &str) -> Vec<String> {
        match crate::manifest::load_str("bad.yaml", text) {
            Err(ManifestError::Invalid(p)) => p.iter().map(|p| p.to_string()).collect(),
            Ok(_) => panic!("loaded, but it must be refused:\n{text}"),
            Err(e) => panic!("unexpected error {e}"),
        }
    }

    #[test]
    fn every_bad_cron_of_a_fleet_is_reported_at_its_own_value() {
        let text = format!(
            "{ZONED}    - scheduled:
        cron: \"0 25 * * *\"
        duration: 1h
        min: 3
deploy:
  freeze:
    - {{ cron: \"0 17 * * FRI\", duration: 1h }}
    - {{ cron: \"0 0 31 2 *\", duration: 1h }}
simulation:
  capacity_per_instance: 100
  traffic:
    synthetic: {{ base: 1, peak: 2, bursts: [{{ cron: \"@daily\", duration: 1h, factor: 2 }}] }}
"
        );
        let p = load_problems(&text);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].starts_with("bad.yaml:10:15: cron '0 25 * * *' does not parse: hour field"),
            "{p:?}"
        );
        assert!(
            p[1].starts_with("bad.yaml:16:15: freeze cron '0 0 31 2 *' never fires"),
            "{p:?}"
        );
        assert!(
            p[2].starts_with("bad.yaml:20:53: burst cron '@daily' does not parse"),
            "{p:?}"
        );
    }

    #[test]
    fn an_unknown_time_zone_is_refused_at_its_value() {
        let p = load_problems(&ZONED.replace("Europe/Paris", "Europe/Pariss"));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("bad.yaml:8:49: "), "{p:?}");
        assert!(
            p[0].contains("unknown time zone 'Europe/Pariss': use an IANA name"),
            "{p:?}"
        );
    }

    #[test]
    fn a_scheduled_floor_with_a_time_zone_opens_at_local_time() {
        let config = crate::manifest::load_str("zoned.yaml", ZONED).expect("loads");
        let Some(crate::manifest::PolicySpec::Scheduled(spec)) =
            config.fleets[0].scaling.policies.first()
        else {
            panic!("a scheduled policy");
        };
        assert_eq!(spec.timezone, Some(chrono_tz::Europe::Paris));
        let floor = |t| crate::policy::scheduled_floor(spec, t);
        // 08:00 in Paris is 06:00 UTC in July, 07:00 UTC in January.
        assert_eq!(floor(utc(2026, 7, 1, 5, 59)), None);
        assert_eq!(floor(utc(2026, 7, 1, 6, 0)), Some(6));
        assert_eq!(floor(utc(2026, 7, 1, 6, 59)), Some(6));
        assert_eq!(floor(utc(2026, 7, 1, 7, 0)), None);
        assert_eq!(floor(utc(2026, 1, 7, 6, 30)), None);
        assert_eq!(floor(utc(2026, 1, 7, 7, 30)), Some(6));
    }

    #[test]
    fn standard_five_field_expressions_are_accepted() {
        for e in [
            "0 7 * * MON-FRI",
            "*/15 * * * *",
            "0 0 1 1 *",
            "30 18 * * TUE,THU",
            "0 9-17/2 * * 1-5",
            "0 0 * jan,Jul sun",
            "0 0 * * FRI-SUN",
            "0 0 * * 7",
            "0 0 29 2 *",
            "0 0 31 * *",
            "0 0 31 2 MON",
            "*,5 * *,1 * *",
            " 5  4 * * *  ",
        ] {
            assert!(
                CronSchedule::parse(e).is_ok(),
                "{e}: {:?}",
                CronSchedule::parse(e)
            );
        }
    }

    #[test]
    fn expressions_that_can_never_fire_are_refused() {
        for e in [
            "0 0 31 2 *",
            "0 0 30 2 *",
            "0 0 31 4,6,9,11 *",
            "0 0 30-31 FEB *",
        ] {
            match CronSchedule::parse(e) {
                Err(CronError::NeverFires { expr, .. }) => assert_eq!(expr, e),
                other => panic!("{e}: {other:?}"),
            }
        }
        let msg = CronSchedule::parse("0 0 31 2 *")
            .expect_err("never fires")
            .to_string();
        assert!(
            msg.starts_with(
                "cron '0 0 31 2 *' never fires: no date matches day-of-month '31' in month '2'"
            ),
            "{msg}"
        );
    }

    #[test]
    fn the_29th_of_february_fires_across_the_skipped_leap_day_of_2100() {
        let s = CronSchedule::parse("0 0 29 2 *").expect("fires every 4 to 8 years");
        assert_eq!(s.next(utc(2096, 3, 1, 0, 0)), Some(utc(2104, 2, 29, 0, 0)));
        assert_eq!(
            s.previous(utc(2104, 2, 28, 0, 0)),
            Some(utc(2096, 2, 29, 0, 0))
        );
    }

    #[test]
    fn extensions_and_other_field_counts_are_refused_with_a_rewrite() {
        let cases: &[(&str, &str)] = &[
            (
                "0 8 * * ? ",
                "'?' in the day-of-week field is a Quartz/EventBridge placeholder",
            ),
            (
                "0 8 L * *",
                "'L' in the day-of-month field is Quartz's last day (L)",
            ),
            ("0 8 * * 5L", "Quartz's last weekday of the month"),
            ("0 8 15W * *", "Quartz's nearest weekday"),
            ("0 8 * * FRI#2", "Quartz's nth weekday"),
            (
                "0 8 * * +MON",
                "croner's day-of-month AND day-of-week modifier",
            ),
            ("5/15 * * * *", "write the range: 5-59/15"),
            (
                "@daily",
                "the nickname @daily is not standard 5-field cron; write \"0 0 * * *\"",
            ),
            (
                "0 25 * * *",
                "hour field '25': 25 is out of range: hour values are 0-23",
            ),
            ("0 8 * MON *", "'MON' is not a month: write 1-12 or JAN-DEC"),
            (
                "0 22-2 * * *",
                "the range 22-2 runs backwards; cron ranges do not wrap around: write 22-23,0-2",
            ),
            ("*/0 * * * *", "the step '0' must be a number from 1 to 59"),
            ("1,,2 * * * *", "empty item"),
            ("not a cron", "it has 3 field(s)"),
            ("", "it has 0 field(s)"),
            ("0 0 8 * * *", "did you mean \"0 8 * * *\"?"),
        ];
        for (e, want) in cases {
            let msg = CronSchedule::parse(e).expect_err(e).to_string();
            assert!(msg.contains(want), "{e}: {msg}");
            assert!(
                msg.starts_with(&format!("cron '{}' ", e.trim())),
                "{e}: {msg}"
            );
        }
    }

    #[test]
    fn a_schedule_without_a_zone_is_read_in_utc() {
        let s = CronSchedule::new("0 8 * * MON-FRI", None).expect("parses");
        // Friday 2026-07-03 10:00 UTC: the last start was 08:00 UTC that day, the next
        // is Monday 08:00 UTC.
        assert_eq!(
            s.previous(utc(2026, 7, 3, 10, 0)),
            Some(utc(2026, 7, 3, 8, 0))
        );
        assert_eq!(s.next(utc(2026, 7, 3, 10, 0)), Some(utc(2026, 7, 6, 8, 0)));
    }

    #[test]
    fn weekday_mornings_in_paris_are_0600_utc_in_summer_and_0700_utc_in_winter() {
        let s = paris("0 8 * * MON-FRI");
        assert_eq!(s.next(utc(2026, 7, 1, 0, 0)), Some(utc(2026, 7, 1, 6, 0)));
        assert_eq!(s.next(utc(2026, 1, 7, 0, 0)), Some(utc(2026, 1, 7, 7, 0)));
    }

    #[test]
    fn eight_oclock_in_paris_stays_eight_oclock_local_across_both_changes_of_2026() {
        let s = paris("0 8 * * *");
        // Spring forward on Sunday 29 March: CET (+1) before, CEST (+2) from that day.
        assert_eq!(
            starts(&s, utc(2026, 3, 28, 0, 0), utc(2026, 3, 31, 0, 0)),
            vec![
                utc(2026, 3, 28, 7, 0),
                utc(2026, 3, 29, 6, 0),
                utc(2026, 3, 30, 6, 0)
            ]
        );
        // Fall back on Sunday 25 October: CEST before, CET from that day.
        assert_eq!(
            starts(&s, utc(2026, 10, 24, 0, 0), utc(2026, 10, 27, 0, 0)),
            vec![
                utc(2026, 10, 24, 6, 0),
                utc(2026, 10, 25, 7, 0),
                utc(2026, 10, 26, 7, 0)
            ]
        );
        // The window open at 08:30 local on the change days started at 08:00 local.
        let hour = TimeDelta::hours(1);
        assert_eq!(
            s.window_start(utc(2026, 3, 29, 6, 30), hour),
            Some(utc(2026, 3, 29, 6, 0))
        );
        assert_eq!(
            s.window_start(utc(2026, 10, 25, 7, 30), hour),
            Some(utc(2026, 10, 25, 7, 0))
        );
        assert_eq!(s.window_start(utc(2026, 10, 25, 6, 30), hour), None);
    }

    #[test]
    fn a_fixed_start_in_the_spring_forward_gap_starts_when_the_gap_ends() {
        // 02:30 does not exist in Paris on 29 March 2026 (02:00 CET -> 03:00 CEST, at
        // 01:00 UTC): that day's start is 03:00 CEST, 01:00 UTC; the days around it are
        // 02:30 local.
        let s = paris("30 2 * * *");
        assert_eq!(
            starts(&s, utc(2026, 3, 28, 0, 0), utc(2026, 3, 31, 0, 0)),
            vec![
                utc(2026, 3, 28, 1, 30),
                utc(2026, 3, 29, 1, 0),
                utc(2026, 3, 30, 0, 30)
            ]
        );
        assert_eq!(
            s.previous(utc(2026, 3, 29, 1, 0)),
            Some(utc(2026, 3, 29, 1, 0))
        );
        assert_eq!(
            s.previous(utc(2026, 3, 29, 0, 59)),
            Some(utc(2026, 3, 28, 1, 30))
        );
    }

    #[test]
    fn a_wildcard_schedule_has_no_starts_in_the_spring_forward_gap() {
        // Every half hour of 02:xx local: on 29 March 2026 that hour never happens.
        let s = paris("*/30 2 * * *");
        assert_eq!(
            starts(&s, utc(2026, 3, 28, 0, 0), utc(2026, 3, 31, 0, 0)),
            vec![
                utc(2026, 3, 28, 1, 0),  // 02:00 CET
                utc(2026, 3, 28, 1, 30), // 02:30 CET
                utc(2026, 3, 30, 0, 0),  // 02:00 CEST
                utc(2026, 3, 30, 0, 30), // 02:30 CEST
            ]
        );
        assert_eq!(
            s.previous(utc(2026, 3, 29, 12, 0)),
            Some(utc(2026, 3, 28, 1, 30))
        );
    }

    #[test]
    fn a_fixed_start_in_the_repeated_autumn_hour_fires_once() {
        // 02:30 happens twice in Paris on 25 October 2026: 00:30 UTC (CEST) and 01:30 UTC
        // (CET). It starts at the first only.
        let s = paris("30 2 * * *");
        assert_eq!(
            starts(&s, utc(2026, 10, 24, 0, 0), utc(2026, 10, 27, 0, 0)),
            vec![
                utc(2026, 10, 24, 0, 30),
                utc(2026, 10, 25, 0, 30),
                utc(2026, 10, 26, 1, 30)
            ]
        );
        // During the second 02:30, the last start is still the first one.
        assert_eq!(
            s.previous(utc(2026, 10, 25, 1, 45)),
            Some(utc(2026, 10, 25, 0, 30))
        );
        assert_eq!(
            s.next(utc(2026, 10, 25, 1, 0)),
            Some(utc(2026, 10, 26, 1, 30))
        );
    }

    #[test]
    fn a_wildcard_schedule_starts_in_both_passes_of_the_repeated_hour() {
        let s = paris("*/30 2 * * *");
        assert_eq!(
            starts(&s, utc(2026, 10, 24, 12, 0), utc(2026, 10, 27, 0, 0)),
            vec![
                utc(2026, 10, 25, 0, 0),  // 02:00 CEST
                utc(2026, 10, 25, 0, 30), // 02:30 CEST
                utc(2026, 10, 25, 1, 0),  // 02:00 CET
                utc(2026, 10, 25, 1, 30), // 02:30 CET
                utc(2026, 10, 26, 1, 0),  // 02:00 CET
                utc(2026, 10, 26, 1, 30), // 02:30 CET
            ]
        );
        assert_eq!(
            s.previous(utc(2026, 10, 25, 1, 20)),
            Some(utc(2026, 10, 25, 1, 0))
        );
        assert_eq!(
            s.previous(utc(2026, 10, 25, 0, 50)),
            Some(utc(2026, 10, 25, 0, 30))
        );
    }

    #[test]
    fn an_unknown_zone_is_refused_with_a_suggestion() {
        assert_eq!(parse_zone("Europe/Paris"), Ok(chrono_tz::Europe::Paris));
        let e = parse_zone("europe/paris").expect_err("case matters");
        assert!(e.contains("did you mean Europe/Paris?"), "{e}");
        let e = parse_zone("Mars/Olympus").expect_err("not a zone");
        assert!(e.contains("use an IANA name such as Europe/Paris"), "{e}");
    }

    /// One field of a random expression: values, ranges, steps and lists, in range.
    fn field(min: u16, max: u16) -> impl Strategy<Value = String> {
        let item = prop_oneof![
            Just("*".to_string()),
            (min..=max).prop_map(|v| v.to_string()),
            (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            (1..=max).prop_map(|s| format!("*/{s}")),
            (min..=max, min..=max, 1..=max).prop_map(|(a, b, s)| format!(
                "{}-{}/{s}",
                a.min(b),
                a.max(b)
            )),
        ];
        proptest::collection::vec(item, 1..4).prop_map(|v| v.join(","))
    }

    fn expression() -> impl Strategy<Value = String> {
        (
            field(0, 59),
            field(0, 23),
            field(1, 31),
            field(1, 12),
            field(0, 7),
        )
            .prop_map(|(a, b, c, d, e)| format!("{a} {b} {c} {d} {e}"))
    }

    fn zone() -> impl Strategy<Value = Tz> {
        prop_oneof![
            Just(Tz::UTC),
            Just(chrono_tz::Europe::Paris),
            Just(chrono_tz::America::New_York),
            Just(chrono_tz::Australia::Lord_Howe),
            Just(chrono_tz::Pacific::Apia),
        ]
    }

    /// A moment from 2000 to 2100, or within a day and a half of a clock change of the
    /// zones above (Paris and New York in 2026, Lord Howe's half-hour changes, Apia's
    /// skipped day in 2011), where the interesting cases are.
    fn moment() -> impl Strategy<Value = DateTime<Utc>> {
        let changes = vec![
            1_774_746_000i64,
            1_792_890_000,
            1_772_953_200,
            1_793_512_800,
            1_775_314_800,
            1_791_041_400,
            1_325_239_200,
        ];
        prop_oneof![
            946_684_800i64..4_102_444_800i64,
            prop::sample::select(changes).prop_flat_map(|t| t - 129_600..t + 129_600),
        ]
        .prop_map(|secs| DateTime::from_timestamp(secs, 0).expect("in range"))
    }

    /// Sparse schedules around the small hours, where clocks change.
    fn small_hours_expression() -> impl Strategy<Value = String> {
        let minute = prop_oneof![
            (0u16..60).prop_map(|m| m.to_string()),
            Just("*/15".to_string()),
            Just("0,30".to_string()),
        ];
        let hour = prop_oneof![
            (0u16..5).prop_map(|h| h.to_string()),
            Just("1-3".to_string()),
            Just("*".to_string()),
            Just("*/2".to_string()),
        ];
        let dow = prop_oneof![Just("*".to_string()), (0u16..8).prop_map(|d| d.to_string())];
        (minute, hour, dow).prop_map(|(m, h, d)| format!("{m} {h} * * {d}"))
    }

    /// Whether `t` (a whole minute) is a start of `s`, decided minute by minute from the
    /// rules in the module doc, without the search the schedule does.
    fn is_start_by_the_rules(s: &CronSchedule, t: DateTime<Utc>) -> bool {
        let wall = |t: DateTime<Utc>| t.with_timezone(&s.zone).naive_local();
        let matches = |n: NaiveDateTime| s.cron.is_time_matching(&n.and_utc()).unwrap_or(false);
        let here = wall(t);
        if matches(here) {
            let first_pass = match s.zone.from_local_datetime(&here) {
                LocalResult::Ambiguous(a, b) => t == a.min(b).with_timezone(&Utc),
                _ => true,
            };
            return s.wildcard || first_pass;
        }
        // A fixed-time start skipped by a gap that ends at `t`.
        let mut n = wall(t - TimeDelta::minutes(1)) + TimeDelta::minutes(1);
        while !s.wildcard && n < here {
            if matches(n) {
                return true;
            }
            n += TimeDelta::minutes(1);
        }
        false
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn a_random_expression_parses_with_previous_at_or_before_now_before_next_or_is_refused(
            expr in expression(),
            zone in zone(),
            now in moment(),
        ) {
            match CronSchedule::new(&expr, Some(zone)) {
                Ok(s) => {
                    let prev = s.previous(now).expect("a previous start");
                    let next = s.next(now).expect("a next start");
                    prop_assert!(prev <= now && now < next, "{expr} in {zone}: {prev} {now} {next}");
                    // No start between the two: each finds the other.
                    prop_assert_eq!(s.next(prev), Some(next), "{} in {}", expr, zone);
                    prop_assert_eq!(s.previous(next - TimeDelta::seconds(1)), Some(prev), "{} in {}", expr, zone);
                    prop_assert_eq!(s.previous(next), Some(next), "{} in {}", expr, zone);
                }
                Err(CronError::NeverFires { .. }) => {}
                Err(e) => prop_assert!(false, "{expr}: unexpected refusal {e}"),
            }
        }

        #[test]
        fn random_text_never_panics(text in "\\PC{0,40}", fields in "[0-9*/,LW#?A-Za-z@+-]{0,6}( [0-9*/,LW#?A-Za-z@+-]{0,6}){0,7}") {
            let now = DateTime::from_timestamp(1_780_000_000, 0).expect("in range");
            for t in [text, fields] {
                if let Ok(s) = CronSchedule::parse(&t) {
                    let _ = (s.previous(now), s.next(now));
                }
            }
        }
    }

    proptest! {
        // Each case walks three days minute by minute: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn around_clock_changes_previous_and_next_are_the_starts_the_rules_give(
            expr in small_hours_expression(),
            zone in zone(),
            now in moment(),
        ) {
            let s = CronSchedule::new(&expr, Some(zone)).expect("a valid expression");
            let now = now.with_second(0).expect("whole minute");
            let span = 36 * 60;
            let starts: Vec<DateTime<Utc>> = (-span..=span)
                .map(|m| now + TimeDelta::minutes(m))
                .filter(|t| is_start_by_the_rules(&s, *t))
                .collect();
            if let Some(want) = starts.iter().rev().find(|t| **t <= now) {
                prop_assert_eq!(s.previous(now), Some(*want), "{} in {}", expr, zone);
            }
            if let Some(want) = starts.iter().find(|t| **t > now) {
                prop_assert_eq!(s.next(now), Some(*want), "{} in {}", expr, zone);
            }
        }
    }
}
