//! The README stays true: every config key with its default, every subcommand, and every
//! `status` problem code the code can emit appear in it.

use pgbak::config::documented_keys;

const README: &str = include_str!("../../README.md");

#[test]
fn readme_documents_every_config_key_with_its_default() {
    for (key, default, _) in documented_keys() {
        let row = format!("| `{key}` | `{default}` |");
        assert!(README.contains(&row), "README lacks the row starting {row}");
    }
    let rows = README
        .lines()
        .filter(|l| l.starts_with("| `") && l.contains('.'))
        .count();
    assert!(rows >= documented_keys().len());
}

#[test]
fn readme_documents_every_command_and_problem_code() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_pgbak"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(!commands.is_empty(), "{help}");
    for command in commands {
        let documented = README
            .lines()
            .filter(|line| line.starts_with("### "))
            .any(|heading| heading.contains(&format!("`pgbak {command}")));
        assert!(documented, "README lacks a section heading for {command}");
    }
    // Problems are raised where the report's parts are collected and analysed.
    let sources = [
        include_str!("../../src/report/collect.rs"),
        include_str!("../../src/report/analyse.rs"),
        include_str!("../../src/report/retention.rs"),
    ];
    let codes: Vec<&str> = sources
        .iter()
        .flat_map(|source| source.split("code: \"").skip(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(!codes.is_empty(), "no problem codes found in src/report/");
    for code in codes {
        assert!(
            README.contains(&format!("`{code}`")),
            "README lacks problem code {code}"
        );
    }
}
