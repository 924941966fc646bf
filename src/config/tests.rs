use super::keys::KEYS;
use super::keys::SECTIONS;
use super::*;
use crate::hint::OperatorHint;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::Path;

const PATH: &str = "/srv/pgbak/config.toml";

fn parse_error(text: &str) -> ConfigError {
    match parse(text, Path::new(PATH)) {
        Ok(config) => panic!("expected an error for {text:?}, got {config:?}"),
        Err(error) => error,
    }
}

/// A file that sets every documented key to its documented default, built from the list.
fn file_with_every_default() -> String {
    let mut text = String::new();
    let mut section_written = "";
    for (key, default, meaning) in documented_keys() {
        let (section, name) = key.split_once('.').unwrap();
        if section != section_written {
            text.push_str(&format!("\n[{section}]\n"));
            section_written = section;
        }
        text.push_str(&format!("{name} = {default} # {meaning}\n"));
    }
    text
}

#[test]
fn documented_keys_match_the_structs_and_their_defaults() {
    let serialized = toml::Table::try_from(Config::default()).unwrap();
    let mut from_structs = BTreeMap::new();
    for (section, table) in &serialized {
        for (name, value) in table.as_table().unwrap() {
            from_structs.insert(format!("{section}.{name}"), value.to_string());
        }
    }
    let documented: BTreeMap<String, String> = documented_keys()
        .iter()
        .map(|(key, default, _)| (key.to_string(), default.to_string()))
        .collect();
    assert_eq!(from_structs, documented);
    let sections: Vec<&str> = serialized.keys().map(String::as_str).collect();
    let mut expected_sections = SECTIONS.to_vec();
    expected_sections.sort_unstable();
    let mut sections_sorted = sections.clone();
    sections_sorted.sort_unstable();
    assert_eq!(sections_sorted, expected_sections);
    for doc in KEYS {
        assert!(
            !doc.meaning.is_empty() && !doc.allowed.is_empty(),
            "{}",
            doc.key
        );
        assert!(
            !doc.meaning.contains("  "),
            "{}: stray line continuation",
            doc.key
        );
    }
}

#[test]
fn a_file_with_every_documented_default_is_the_default_config() {
    let text = file_with_every_default();
    assert_eq!(parse(&text, Path::new(PATH)).unwrap(), Config::default());
}

#[test]
fn an_absent_or_empty_file_means_every_default() {
    let directory = std::env::temp_dir().join(format!(
        "pgbak-config-absent-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    std::fs::create_dir(&directory).unwrap();
    let loaded = load(&directory.join("config.toml"));
    let unreadable = load(&directory);
    std::fs::remove_dir_all(&directory).unwrap();
    assert_eq!(loaded.unwrap(), Config::default());
    assert_eq!(parse("", Path::new(PATH)).unwrap(), Config::default());
    assert_eq!(
        parse("# only a comment\n", Path::new(PATH)).unwrap(),
        Config::default()
    );
    // A directory where the file should be is not "absent": it is refused (S-7.1).
    assert!(matches!(
        unreadable,
        Err(ConfigError::NotARegularFile {
            kind: "a directory",
            ..
        })
    ));
}

#[test]
fn a_partial_file_overrides_only_what_it_sets() {
    let text = "[base]\nmax_age_hours = 24\nmax_wal_ratio = 0.5\n\n[pg_basebackup]\n\
                host = \"/run/postgresql\"\nport = 5433\nextra_args = [\"--checkpoint=fast\"]\n\
                [sync]\nautostart = false\n";
    let config = parse(text, Path::new(PATH)).unwrap();
    let mut expected = Config::default();
    expected.base.max_age_hours = 24;
    expected.base.max_wal_ratio = 0.5;
    expected.pg_basebackup.host = "/run/postgresql".into();
    expected.pg_basebackup.port = 5433;
    expected.pg_basebackup.extra_args = vec!["--checkpoint=fast".into()];
    expected.sync.autostart = false;
    assert_eq!(config, expected);
}

#[test]
fn an_unknown_key_names_the_dotted_key_the_file_and_the_line() {
    let error = parse_error("[base]\ncompression_level = 3\n\nmax_agee = 24\n");
    assert_eq!(
        error.to_string(),
        "config /srv/pgbak/config.toml: unknown key \"base.max_agee\" (line 4)"
    );
    let hint = error.hint().unwrap();
    assert!(
        hint.starts_with("did you mean \"base.max_age_hours\"? "),
        "{hint}"
    );
    assert!(
        hint.contains("known keys in [base]: compression_level, "),
        "{hint}"
    );
}

#[test]
fn unknown_keys_in_every_spelling_are_found() {
    for (text, key, line) in [
        ("base.max_agee = 1\n", "base.max_agee", 1),
        ("base = { max_agee = 1 }\n", "base.max_agee", 1),
        ("[wall]\ncompression_level = 1\n", "wall", 1),
        ("\n\nautostart = false\n", "autostart", 3),
        ("[base.nested]\nx = 1\n", "base.nested", 1),
        (
            "[sync]\nautostart = true\n[script]\ntimeout = 5\n[wal]\nlevel = 1\n",
            "script.timeout",
            4,
        ),
    ] {
        match parse_error(text) {
            ConfigError::UnknownKey {
                key: found,
                line: Some(found_line),
                ..
            } => {
                assert_eq!((found.as_str(), found_line), (key, line), "{text:?}");
            }
            other => panic!("{text:?}: expected UnknownKey, got {other:?}"),
        }
    }
    let hint = parse_error("autostart = false\n").hint().unwrap();
    assert!(
        hint.starts_with("did you mean \"sync.autostart\"?"),
        "{hint}"
    );
    let hint = parse_error("[wall]\n").hint().unwrap();
    assert!(
        hint.starts_with("did you mean \"wal\"? known keys: "),
        "{hint}"
    );
}

#[test]
fn a_syntax_error_names_the_file_and_the_line() {
    let error = parse_error("[wal]\ncompression_level = 1\ncompression_threads =\n");
    match &error {
        ConfigError::Syntax { line, .. } => assert_eq!(*line, Some(3)),
        other => panic!("expected Syntax, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .starts_with("config /srv/pgbak/config.toml: TOML syntax error at line 3: "),
        "{error}"
    );
}

#[test]
fn a_value_out_of_range_names_key_value_range_and_line() {
    let error = parse_error("[wal]\n[base]\nmax_wal_ratio = -1.5\n");
    assert_eq!(
        error.to_string(),
        "config /srv/pgbak/config.toml: base.max_wal_ratio = -1.5 (line 3) is not allowed \
         (out of range); allowed: a finite number greater than 0"
    );
    assert_eq!(
        error.hint().unwrap(),
        "set base.max_wal_ratio to a finite number greater than 0, or remove it for the \
         default 1.0"
    );
    for (text, key) in [
        ("[wal]\ncompression_level = 0\n", "wal.compression_level"),
        ("[wal]\ncompression_level = 20\n", "wal.compression_level"),
        (
            "[base]\ncompression_threads = 65\n",
            "base.compression_threads",
        ),
        ("[base]\nmax_age_hours = 0\n", "base.max_age_hours"),
        ("[base]\nmax_wal_ratio = nan\n", "base.max_wal_ratio"),
        ("[base]\nmax_wal_ratio = inf\n", "base.max_wal_ratio"),
        ("[base]\nmax_wal_ratio = 0.0\n", "base.max_wal_ratio"),
        (
            "[base]\nretry_delay_min_seconds = 0\n",
            "base.retry_delay_min_seconds",
        ),
        (
            "[script]\nretry_delay_max_seconds = 86401\n",
            "script.retry_delay_max_seconds",
        ),
        (
            "[script]\ntimeout_seconds = 604801\n",
            "script.timeout_seconds",
        ),
        ("[pg_basebackup]\npath = \"\"\n", "pg_basebackup.path"),
        (
            "[pg_basebackup]\nextra_args = [\"-Fp\"]\n",
            "pg_basebackup.extra_args",
        ),
        (
            "[pg_basebackup]\nextra_args = [\"--wal-method=fetch\"]\n",
            "pg_basebackup.extra_args",
        ),
    ] {
        match parse_error(text) {
            ConfigError::InvalidValue {
                key: found,
                line: Some(2),
                ..
            } => {
                assert_eq!(found, key, "{text:?}")
            }
            other => panic!("{text:?}: expected InvalidValue on line 2, got {other:?}"),
        }
    }
}

#[test]
fn a_value_of_the_wrong_type_names_the_key_and_the_value_as_written() {
    let error = parse_error("[wal]\ncompression_level = \"fast\"\n");
    match &error {
        ConfigError::InvalidValue {
            key, value, line, ..
        } => {
            assert_eq!(
                (key.as_str(), value.as_str(), *line),
                ("wal.compression_level", "\"fast\"", Some(2))
            );
        }
        other => panic!("expected InvalidValue, got {other:?}"),
    }
    assert!(
        error
            .to_string()
            .contains("allowed: an integer from 1 to 19"),
        "{error}"
    );
    for (text, key) in [
        (
            "[wal]\ncompression_threads = -1\n",
            "wal.compression_threads",
        ),
        ("[pg_basebackup]\nport = 70000\n", "pg_basebackup.port"),
        (
            "[pg_basebackup]\nextra_args = \"--progress\"\n",
            "pg_basebackup.extra_args",
        ),
        ("[sync]\nautostart = \"yes\"\n", "sync.autostart"),
        ("base = 3\n", "base"),
    ] {
        match parse_error(text) {
            ConfigError::InvalidValue { key: found, .. } => assert_eq!(found, key, "{text:?}"),
            other => panic!("{text:?}: expected InvalidValue, got {other:?}"),
        }
    }
}

#[test]
fn reversed_retry_delays_are_refused() {
    let error = parse_error("[base]\nretry_delay_min_seconds = 7200\n");
    assert_eq!(
        error.to_string(),
        "config /srv/pgbak/config.toml: base.retry_delay_min_seconds = 7200 is greater than \
         base.retry_delay_max_seconds = 3600"
    );
    let error =
        parse_error("[script]\nretry_delay_min_seconds = 10\nretry_delay_max_seconds = 5\n");
    assert!(matches!(
        error,
        ConfigError::RetryDelaysReversed {
            section: "script",
            ..
        }
    ));
}

#[test]
fn messages_and_hints_are_single_lines_without_the_program_prefix() {
    for text in [
        "[base]\nmax_agee = 1\n",
        "[wal\n",
        "[base]\nmax_wal_ratio = -1.0\n",
        "[wal]\ncompression_level = \"x\"\n",
        "[base]\nretry_delay_min_seconds = 7200\n",
    ] {
        let error = parse_error(text);
        let message = error.to_string();
        assert!(
            !message.contains('\n') && !message.starts_with("pgbak"),
            "{message:?}"
        );
        assert!(!error.hint().unwrap().contains('\n'), "{text:?}");
    }
}

#[test]
fn a_fifo_or_an_oversized_file_is_refused_with_a_one_line_message_and_hint() {
    let scratch = crate::test_support::ScratchDirectory::new("config-special");
    let fifo = scratch.0.join("fifo.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // No writer ever comes: a blocking open would never return (S-7.1).
    let error = load(&fifo).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("config {}: is a FIFO, not a regular file", fifo.display())
    );
    let oversized = scratch.0.join("big.toml");
    let comment = format!("#{}\n", "x".repeat(1023));
    std::fs::write(&oversized, comment.repeat(1025)).unwrap();
    let error = load(&oversized).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "config {}: is larger than 1048576 bytes (1 MiB), the most pgbak reads from it",
            oversized.display()
        )
    );
    for error in [load(&fifo).unwrap_err(), error] {
        assert!(!error.hint().unwrap().contains('\n'));
    }
    let not_utf8 = scratch.0.join("latin1.toml");
    std::fs::write(&not_utf8, b"# caf\xe9\n").unwrap();
    assert!(matches!(
        load(&not_utf8),
        Err(ConfigError::Unreadable { .. })
    ));
}

#[test]
fn the_default_config_gives_the_machines_default_policy() {
    assert_eq!(
        Config::default().machine_policy(),
        crate::machine::Policy::default()
    );
    let mut config = Config::default();
    config.script.timeout_seconds = 90;
    config.base.max_age_hours = 24;
    let policy = config.machine_policy();
    assert_eq!(policy.script_timeout_ms, Some(90_000));
    assert_eq!(policy.base_max_age_ms, 86_400_000);
}

prop_compose! {
    fn valid_config()(
        wal_level in 1..=19i32,
        wal_threads in 0..=64u32,
        conflicts_max_bytes in 0..=(1u64 << 40),
        base_level in 1..=19i32,
        base_threads in 0..=64u32,
        max_age_hours in 1..=87_600u64,
        max_wal_ratio in 0.001..1000.0f64,
        base_retry in (1..=86_400u64, 1..=86_400u64),
        host in "[a-z0-9./-]{0,20}",
        port in any::<u16>(),
        extra_args in proptest::collection::vec("--[a-z]{1,10}(=[a-z0-9]{1,5})?", 0..4),
        timeout_seconds in 0..=604_800u64,
        script_retry in (1..=86_400u64, 1..=86_400u64),
        autostart in any::<bool>(),
        keep_bases in 0..=100_000u32,
    ) -> Config {
        let ordered = |(a, b): (u64, u64)| (a.min(b), a.max(b));
        let (base_min, base_max) = ordered(base_retry);
        let (script_min, script_max) = ordered(script_retry);
        Config {
            wal: WalConfig {
                compression_level: wal_level,
                compression_threads: wal_threads,
                conflicts_max_bytes,
            },
            base: BaseConfig {
                compression_level: base_level,
                compression_threads: base_threads,
                max_age_hours,
                max_wal_ratio,
                retry_delay_min_seconds: base_min,
                retry_delay_max_seconds: base_max,
            },
            pg_basebackup: PgBasebackupConfig {
                path: "/usr/lib/postgresql/17/bin/pg_basebackup".into(),
                host,
                port,
                user: "postgres".into(),
                extra_args,
            },
            script: ScriptConfig {
                timeout_seconds,
                retry_delay_min_seconds: script_min,
                retry_delay_max_seconds: script_max,
            },
            sync: SyncConfig { autostart },
            retention: RetentionConfig { keep_bases },
        }
    }
}

proptest! {
    #[test]
    fn every_valid_config_round_trips_through_toml(config in valid_config()) {
        let text = toml::to_string(&config).unwrap();
        prop_assert_eq!(parse(&text, Path::new(PATH)).unwrap(), config);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse(&text, Path::new(PATH));
    }
}
