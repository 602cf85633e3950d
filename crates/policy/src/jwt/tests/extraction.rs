//! authentication.md §5.3 (token extraction) and the CORS preflight bypass of §5.5.

use serde_json::json;
use test_case::test_case;

use super::super::extract::{parse_cookies, parse_query, remove_query_param, token_after};
use super::super::{HeaderLocation, JwtFailure};
use super::fixtures::*;

fn valid() -> String {
    rsa_token(&json!({}))
}

fn authn_default() -> super::super::JwtAuthenticator {
    authenticator(&[test_rule()])
}

#[test]
fn default_locations_are_bearer_authorization_and_access_token() {
    let authn = authn_default();
    verified(get(&authn, "/", &bearer(&valid())));
    verified(get(&authn, &format!("/?access_token={}", valid()), &[]));
    // Neither another header nor another parameter is a default location.
    assert!(no_token(get(&authn, &format!("/?token={}", valid()), &[])).is_empty());
    assert!(no_token(get(&authn, "/", &headers(&[("x-jwt", &valid())]))).is_empty());
}

#[test]
fn configured_locations_replace_the_defaults() {
    let mut rule = test_rule();
    rule.from_params = vec!["jwt".to_owned()];
    let authn = authenticator(&[rule]);
    assert!(no_token(get(&authn, "/", &bearer(&valid()))).is_empty());
    assert!(no_token(get(&authn, &format!("/?access_token={}", valid()), &[])).is_empty());
    verified(get(&authn, &format!("/?jwt={}", valid()), &[]));
}

#[test_case("Bearer {}", true ; "plain")]
#[test_case("Foo Bearer {}", true ; "prefix found anywhere in the value")]
#[test_case("Bearer   {}", true ; "spaces after the prefix skipped")]
#[test_case("Bearer \"{}\"", true ; "quotes around the token skipped")]
#[test_case("Bearer {}, Bearer junk", true ; "token ends at the first non-token character")]
#[test_case("Bearer {} trailing", true ; "token ends at a space")]
#[test_case("bearer {}", false ; "lower-case prefix is not the prefix")]
#[test_case("BEARER {}", false ; "upper-case prefix is not the prefix")]
#[test_case("Bearer{}", false ; "prefix includes the space")]
#[test_case("Basic {}", false ; "another scheme")]
fn header_prefix(template: &str, found: bool) {
    let value = template.replace("{}", &valid());
    let outcome = get(
        &authn_default(),
        "/",
        &headers(&[("authorization", &value)]),
    );
    if found {
        verified(outcome);
    } else {
        assert!(no_token(outcome).is_empty());
    }
}

#[test]
fn prefix_without_token_characters_yields_the_whole_value() {
    // Envoy falls back to the whole header value, which then fails to parse.
    assert_eq!(token_after("Bearer !!!", 7), "Bearer !!!");
    let outcome = get(
        &authn_default(),
        "/",
        &headers(&[("authorization", "Bearer ")]),
    );
    assert_eq!(rejected(outcome).reason, JwtFailure::BadFormat);
}

#[test]
fn every_value_of_a_repeated_header_is_searched() {
    let request = headers(&[
        ("authorization", "Basic dXNlcjpwYXNz"),
        ("authorization", &format!("Bearer {}", valid())),
    ]);
    verified(get(&authn_default(), "/", &request));
}

#[test]
fn the_first_bearer_value_of_a_repeated_header_is_the_token() {
    let request = headers(&[
        ("authorization", "Bearer garbage"),
        ("authorization", &format!("Bearer {}", valid())),
    ]);
    assert_eq!(
        rejected(get(&authn_default(), "/", &request)).reason,
        JwtFailure::BadFormat
    );
}

#[test]
fn header_without_prefix_is_the_whole_value() {
    let authn = authenticator(&[raw_header_rule()]);
    verified(get(&authn, "/", &headers(&[("x-jwt", &valid())])));
    // `Bearer ` is then part of the token.
    let outcome = get(
        &authn,
        "/",
        &headers(&[("x-jwt", &format!("Bearer {}", valid()))]),
    );
    let reason = rejected(outcome).reason;
    assert!(
        matches!(
            reason,
            JwtFailure::HeaderBadBase64 | JwtFailure::HeaderBadJson
        ),
        "{reason:?}"
    );
}

#[test]
fn configured_header_names_are_case_insensitive() {
    let mut rule = test_rule();
    rule.from_headers = vec![HeaderLocation {
        name: "X-My-Token".to_owned(),
        prefix: Some("Token ".to_owned()),
    }];
    let authn = authenticator(&[rule]);
    verified(get(
        &authn,
        "/",
        &headers(&[("x-my-token", &format!("Token {}", valid()))]),
    ));
}

#[test]
fn query_parameter_first_value_is_used() {
    let authn = authn_default();
    verified(get(
        &authn,
        &format!("/?access_token={}&access_token=junk", valid()),
        &[],
    ));
    let outcome = get(
        &authn,
        &format!("/?access_token=junk&access_token={}", valid()),
        &[],
    );
    assert_eq!(rejected(outcome).reason, JwtFailure::BadFormat);
}

#[test]
fn query_parameter_is_url_decoded() {
    let encoded = valid().replace('.', "%2E");
    verified(get(
        &authn_default(),
        &format!("/p?a=1&access_%74oken={encoded}"),
        &[],
    ));
}

#[test]
fn parse_query_matches_envoy() {
    let pairs = parse_query("/p?a=1&b=%41%2&c&=x&d=e=f&plus=a+b");
    let expected: Vec<(String, String)> = [
        ("a", "1"),
        ("b", "A%2"),
        ("c", ""),
        ("", "x"),
        ("d", "e=f"),
        ("plus", "a+b"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    assert_eq!(pairs, expected);
    assert!(parse_query("/no-query").is_empty());
}

#[test]
fn removing_a_parameter_rebuilds_the_query_like_envoy() {
    assert_eq!(
        remove_query_param("/p?access_token=t", "access_token"),
        "/p"
    );
    assert_eq!(
        remove_query_param("/p?z=1&access_token=t&a=x%20y&z=2", "access_token"),
        "/p?a=x y&z=1&z=2"
    );
    assert_eq!(remove_query_param("/p", "access_token"), "/p");
}

#[test]
fn cookies_are_a_location_when_configured() {
    let mut rule = test_rule();
    rule.from_cookies = vec!["session".to_owned()];
    let authn = authenticator(&[rule]);
    let cookie = format!("theme=dark; session={}", valid());
    let verified = verified(get(&authn, "/", &headers(&[("cookie", &cookie)])));
    // authentication.md §5.1: "cookies never removed".
    assert!(verified.headers.is_empty());
    // Only the configured cookie location: the default Authorization header is no longer read.
    assert!(no_token(get(&authn, "/", &bearer(&valid()))).is_empty());
}

#[test]
fn parse_cookies_matches_envoy() {
    let wanted = [
        "a".to_owned(),
        "b".to_owned(),
        "c".to_owned(),
        "d".to_owned(),
    ];
    let request = headers(&[
        ("cookie", "a=1;  b=\"quoted\"; junk; c=x=y"),
        ("cookie", "a=second; d=\""),
        ("x-cookie", "d=nope"),
    ]);
    let cookies = parse_cookies(&request, &wanted);
    let got: Vec<(&str, &str)> = cookies.into_iter().collect();
    assert_eq!(
        got,
        [("a", "1"), ("b", "quoted"), ("c", "x=y"), ("d", "\"")]
    );
}

#[test]
fn cors_preflight_needs_options_origin_and_request_method() {
    let authn = authn_default();
    let garbage = bearer("garbage");
    let with = |extra: &[(&str, &str)]| {
        let mut request = garbage.clone();
        request.extend(headers(extra));
        request
    };
    let preflight = with(&[
        ("origin", "https://a.test"),
        ("access-control-request-method", "PUT"),
    ]);
    assert!(no_token(request(&authn, "OPTIONS", "/", &preflight, NOW)).is_empty());
    // Any missing ingredient means the token is checked.
    for (method, request_headers) in [
        ("GET", preflight.clone()),
        ("options", preflight.clone()),
        ("OPTIONS", with(&[("origin", "https://a.test")])),
        ("OPTIONS", with(&[("access-control-request-method", "PUT")])),
        (
            "OPTIONS",
            with(&[("origin", ""), ("access-control-request-method", "PUT")]),
        ),
    ] {
        let outcome = request(&authn, method, "/", &request_headers, NOW);
        assert_eq!(
            rejected(outcome).reason,
            JwtFailure::BadFormat,
            "{method} {request_headers:?}"
        );
    }
}

#[test]
fn a_request_target_outside_the_slash_prefix_is_not_checked() {
    // Istio's requirement rule matches the path prefix `/`; `OPTIONS *` does not match it.
    assert!(
        no_token(request(
            &authn_default(),
            "OPTIONS",
            "*",
            &bearer("garbage"),
            NOW
        ))
        .is_empty()
    );
}
