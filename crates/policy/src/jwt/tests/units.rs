//! The base64url decoder jwt_verify_lib uses, and properties over arbitrary input.

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use proptest::prelude::*;
use test_case::test_case;

use super::super::JwtRequest;
use super::super::token::decode_base64url;
use super::fixtures::*;

#[test_case("", Some(b"") ; "empty")]
#[test_case("QQ", Some(b"A") ; "unpadded")]
#[test_case("QQ==", Some(b"A") ; "padded")]
#[test_case("QQ=", None ; "short padding")]
#[test_case("QUI=", Some(b"AB") ; "one pad")]
#[test_case("QUI==", None ; "too much padding")]
#[test_case("QUJD=", None ; "padding after a full quantum")]
#[test_case("Q", None ; "six bits left over")]
#[test_case("QU JD", Some(b"ABC") ; "inner whitespace skipped")]
#[test_case("QUJD\n", Some(b"ABC") ; "trailing whitespace")]
#[test_case("QUJD\x0b", Some(b"ABC") ; "vertical tab is whitespace")]
#[test_case("QU+D", None ; "plus is not url safe")]
#[test_case("QU/D", None ; "slash is not url safe")]
#[test_case("QR", Some(b"A") ; "unused bits not checked")]
#[test_case("-_8", Some(&[0xfb, 0xff]) ; "url safe alphabet")]
fn absl_web_safe_unescape(input: &str, expected: Option<&[u8]>) {
    assert_eq!(decode_base64url(input).as_deref(), expected);
}

proptest! {
    #[test]
    fn decoder_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(decode_base64url(&URL_SAFE_NO_PAD.encode(&bytes)), Some(bytes.clone()));
        prop_assert_eq!(decode_base64url(&URL_SAFE.encode(&bytes)), Some(bytes));
    }

    #[test]
    fn authenticate_never_panics(
        method in "(GET|OPTIONS)",
        path in "\\PC{0,40}",
        authorization in "\\PC{0,80}",
        cookie in "\\PC{0,40}",
        now in any::<i64>(),
    ) {
        let mut rule = test_rule();
        rule.from_cookies = vec!["session".to_owned()];
        rule.from_params = vec!["access_token".to_owned()];
        let authn = authenticator(&[rule]);
        let request_headers = headers(&[
            ("authorization", &authorization),
            ("cookie", &cookie),
            ("origin", "o"),
        ]);
        let _ = authn.authenticate(
            &JwtRequest {
                method: &method,
                path: &path,
                headers: &crate::attributes::borrow_headers(&request_headers),
            },
            now,
        );
    }

    #[test]
    fn arbitrary_sections_never_panic(
        header in proptest::collection::vec(any::<u8>(), 0..40),
        payload in proptest::collection::vec(any::<u8>(), 0..40),
        signature in "[A-Za-z0-9_=-]{0,20}",
    ) {
        let token = format!("{}.{}.{signature}", b64(&header), b64(&payload));
        let _ = raw(&token);
    }
}
