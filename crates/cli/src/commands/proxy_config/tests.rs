//! Golden outputs of `proxy-config` from a captured `/config_dump` and `/certs`.

use super::*;

const CONFIG_DUMP: &str = include_str!("../../../tests/data/diagnostics/config_dump.json");
const CERTS: &str = include_str!("../../../tests/data/diagnostics/certs.json");
const NOW: &str = include_str!("../../../tests/data/diagnostics/captured-at.txt");

fn golden(section: Section, format: Format) {
    let answer: serde_json::Value = serde_json::from_str(if section == Section::Secret {
        CERTS
    } else {
        CONFIG_DUMP
    })
    .unwrap();
    let output = render(
        section,
        "default/backend-0",
        &answer,
        format,
        NOW.trim().parse().unwrap(),
    )
    .unwrap();
    let name = format!(
        "proxy-config-{}-{}",
        section.to_possible_value().unwrap().get_name(),
        format.to_possible_value().unwrap().get_name()
    );
    insta::with_settings!({
        snapshot_path => "../../../tests/snapshots",
        prepend_module_to_snapshot => false,
    }, {
        insta::assert_snapshot!(name, output);
    });
}

#[test]
fn every_section_in_every_format() {
    for section in Section::value_variants() {
        for format in Format::value_variants() {
            golden(*section, *format);
        }
    }
}

#[test]
fn an_unexpected_answer_is_an_error_not_a_panic() {
    let now = NOW.trim().parse().unwrap();
    for section in Section::value_variants() {
        let err = render(*section, "p", &serde_json::json!([1]), Format::Table, now).unwrap_err();
        assert!(err.to_string().contains("unexpected shape"), "{err}");
    }
}
