//! Keys, tokens and request helpers shared by the JWT tests.
//!
//! Two kinds of tokens: the conformance corpus's real tokens (signed with `meshward-rsa-1` and
//! `meshward-ec-1`, whose private keys are not here), and tokens crafted in the tests, signed with
//! throw-away keys generated once with
//!
//! ```text
//! openssl genrsa -traditional 2048 | openssl rsa -traditional -outform DER          # RSA_DER
//! openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 | openssl pkcs8 -topk8 -nocrypt -outform DER
//! openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 | openssl pkcs8 -topk8 -nocrypt -outform DER
//! openssl genpkey -algorithm ED25519 | openssl pkcs8 -topk8 -nocrypt -outform DER
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use super::super::{
    ClaimToHeader, HeaderMutations, JwtAuthenticator, JwtOutcome, JwtProvider, JwtRejection,
    JwtRequest, JwtRuleConfig, VerifiedJwt,
};

/// 2025-06-15T15:06:40Z: after every corpus token's `iat`, before their `exp`.
pub(super) const NOW: i64 = 1_750_000_000;

/// The corpus keys `meshward-rsa-1` (RS256) and `meshward-ec-1` (ES256), as the conformance
/// files inline them.
pub(super) const CORPUS_JWKS: &str = r#"{"keys":[{"kty":"RSA","kid":"meshward-rsa-1","use":"sig","alg":"RS256","n":"rrhtNKyObYkzGiQV5I9Q3Dl7hK6_wopUTL_OT5CpFuPTd8sycTEWEAa93XOfgfUSjqWYhtgjgZ-N4881a4lHwc_f7IDqSJcMhtBCLLX5r5OMb0p99HTdAcFdHtp67niDSvQipOvtkcxLy3EnwfNGIBUDFeF-ilNI42nk7cshctexbCDSWUNRR-_M68fD5OLzvEwXeW525wZrZKoPiP2U0NgfMTRMADw4bcT9oG_inEjgxQVI7c1rtZWp5toG1iNpba6zsvBNlVFEHpiUpeQ4J4noXEdmUA-cl2D8f0ut6DN6VQrzQ-E-zGmdjMJXQzQZgKmmR-ZawKLTSCKERIvWbQ","e":"AQAB"},{"kty":"EC","kid":"meshward-ec-1","use":"sig","alg":"ES256","crv":"P-256","x":"kslppEVE383i4cAlOJD_U2iZNkrE5tpHfOiBD8rRl04","y":"khw5LLQisGWoXnN-_dEsQwArS9T2IxoABkdW45MT1j8"}]}"#;

/// `jwt-D-10-authn-plus-authz.yaml`, case "D-10 valid token".
/// Payload: `{"iss":"test-issuer-1@istio.io","sub":"sub-1","iat":1704067200,"exp":4102444800,"groups":["group-1"]}`
pub(super) const TOKEN_ISSUER_1: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1lc2h3YXJkLXJzYS0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJ0ZXN0LWlzc3Vlci0xQGlzdGlvLmlvIiwic3ViIjoic3ViLTEiLCJpYXQiOjE3MDQwNjcyMDAsImV4cCI6NDEwMjQ0NDgwMCwiZ3JvdXBzIjpbImdyb3VwLTEiXX0.UWEvBMPWB6YxHpgMYaBhLG7XbLShoOC3NS_soodWv0OK6I4DsW35olvZnzUTfcuAQZ1P2ZzKxQBI-b37F3UTNjpyL4p2pTmGj5jc7siExdKguMaMHlOky9Vt6CfMbsjnAh27KFQTWc_1mK3X_p7HLneGebAe5tEU87SvPKm16DcayQjBywxRmSkC8-WefAU-04081sHgu9UL2UauxNYfht62FKdafsUoJfw4jXWGf1xGMiUep0FCqZu8kjPxbYX9zcmeC1wzmdOZimP6sdlIyM7C8AvxQ_NeLTEpwhhpwWCTzJCqS77-EH7omTbw8uQpsyEmonR1LZC4ekQ0BCTJQw";

/// `jwt-D-10-authn-plus-authz.yaml`, case "D-10 expired token".
/// Payload: `{"iss":"test-issuer-1@istio.io","sub":"sub-1","iat":978220800,"exp":978307200,"groups":["group-1"]}`
pub(super) const TOKEN_ISSUER_1_EXPIRED: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1lc2h3YXJkLXJzYS0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJ0ZXN0LWlzc3Vlci0xQGlzdGlvLmlvIiwic3ViIjoic3ViLTEiLCJpYXQiOjk3ODIyMDgwMCwiZXhwIjo5NzgzMDcyMDAsImdyb3VwcyI6WyJncm91cC0xIl19.Fv9Ad45NwqNmDx8omeWUKhnqfYNjOOOWQGuHhUaXblZzUX669a2CA1IVjbq9C5y7nH1wpOy0B_Q53b9Gpr7aUk25F9KBhh63tBOHg26BsTPLBC3SYHmgHGT26GZMtcvcJApeKaO7JDdwRL_akf8YuRUgEtzMVngxB_syhtuLRvkjz_ORaHEHIBmSD6WBH73dVg8t4KgW4Jje7a-dEpkOU61I18-4IeN9c3powi_7l1Su0VHdO6eG9mEGxbjrWbQ62yO2ljautHRizvrSGql_efan5hwtuoc5SWmIHJJwAigcTjPRy7jIHQabtr-pnA88Kc4TCptXBjeuzr7QfMXRXA";

/// `jwt-D-12-audiences-and-combined-policies.yaml`, case "D-12b TokenIssuer1 with aud foo".
/// Payload: `{"iss":"test-issuer-1@istio.io","sub":"sub-1","iat":1704067200,"exp":4102444800,"aud":"foo"}`
pub(super) const TOKEN_ISSUER_1_AUD_FOO: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1lc2h3YXJkLXJzYS0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJ0ZXN0LWlzc3Vlci0xQGlzdGlvLmlvIiwic3ViIjoic3ViLTEiLCJpYXQiOjE3MDQwNjcyMDAsImV4cCI6NDEwMjQ0NDgwMCwiYXVkIjoiZm9vIn0.XlIK_UefGK-j-5TokytIA-89RkdRt7eV438GF2leal6cGzPiGW4bjPbHO3Iyj9moGgefmt_K3XkK3CvSkyub2oeYhLzI_3kp6zTQx8lJM8fd8JaXsMVOo_4s-BJ5o3S_ui9pUx-6YEhYDB_5LovGICzgcxPq0WLrjB7nMW_SP4WWk_sPcCXGIPq4bChNGX948kFuLgfWnAEzuFIf5CuuOomvsI-Ly7KiaYYykmduSCRpl7vNmM3LZxUxraDSTjAINbcvtCaLmbz-GK4FrrOOoA8E4GasP1d47lr20Km2G9lnxupGDjBp5_alMSAc2DV-rPnpthiknRprSKsKSx3dDQ";

/// `jwt-D-12-audiences-and-combined-policies.yaml`, case "D-12c TokenIssuer2 without aud".
/// Payload: `{"iss":"test-issuer-2@istio.io","sub":"sub-2","iat":1704067200,"exp":4102444800,"groups":["group-2"]}`
pub(super) const TOKEN_ISSUER_2_ES256: &str = "eyJhbGciOiJFUzI1NiIsImtpZCI6Im1lc2h3YXJkLWVjLTEiLCJ0eXAiOiJKV1QifQ.eyJpc3MiOiJ0ZXN0LWlzc3Vlci0yQGlzdGlvLmlvIiwic3ViIjoic3ViLTIiLCJpYXQiOjE3MDQwNjcyMDAsImV4cCI6NDEwMjQ0NDgwMCwiZ3JvdXBzIjpbImdyb3VwLTIiXX0.2gpb7gm4ZXtn90dKV3YfMRyfmb3bLWn1Smz5arsvovAknMuwbtiYa-6E535dAZJyPwhVa6D4TNcMKsNnJCTODA";

/// `jwt-D-17-alg-none-rejected.yaml`, case "D-17 token with alg none and empty signature".
/// Payload: `{"iss":"test-issuer-1@istio.io","sub":"sub-1","iat":1704067200,"exp":4102444800,"groups":["group-1"]}`
pub(super) const TOKEN_ALG_NONE: &str = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpc3MiOiJ0ZXN0LWlzc3Vlci0xQGlzdGlvLmlvIiwic3ViIjoic3ViLTEiLCJpYXQiOjE3MDQwNjcyMDAsImV4cCI6NDEwMjQ0NDgwMCwiZ3JvdXBzIjpbImdyb3VwLTEiXX0.";

/// `jwt-D-18-unknown-issuer-rejected.yaml`, case "D-18 token from issuer other@example.com".
/// Payload: `{"iss":"other@example.com","sub":"sub-1","iat":1704067200,"exp":4102444800}`
pub(super) const TOKEN_OTHER_ISSUER: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1lc2h3YXJkLXJzYS0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJvdGhlckBleGFtcGxlLmNvbSIsInN1YiI6InN1Yi0xIiwiaWF0IjoxNzA0MDY3MjAwLCJleHAiOjQxMDI0NDQ4MDB9.InDLI36ewJ9iim4dowCnAPu9bJE83ej3RQBNOGdh0pO5OQ4Hwv04lqVFvzXaWwaK-2BGcWXTSiIQG9WGphRJHB99Q6E5brBkpvPqlHarr7LkbMdIG69nKM2N3c_-ui7YRUoWKGYmicNIg7GD1HRxzTWA4yJgtUa6NAVcbAktzPGhXGW1xsuKAPmgVDo8AAjVKzyGOf6NOTqZ3VpHnWQwoH_A9hbk_DBN7RnVRHHXYae4gQ_qP3nFNcPm215tfEAb1fO6gOTeRosBdqTzfLbKcEJ6D9_3B7xacfpwUJ10q5HHTKXA6MMvqRuO2Yyjvdym0JNUdXYgVsetFsSmheK-gA";

/// `jwt-D-20-not-yet-valid-rejected.yaml`, case "D-20 token with nbf 2099-01-01".
/// Payload: `{"iss":"test-issuer-1@istio.io","sub":"sub-1","iat":1704067200,"exp":4102444800,"nbf":4070908800}`
pub(super) const TOKEN_NBF_2099: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1lc2h3YXJkLXJzYS0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJ0ZXN0LWlzc3Vlci0xQGlzdGlvLmlvIiwic3ViIjoic3ViLTEiLCJpYXQiOjE3MDQwNjcyMDAsImV4cCI6NDEwMjQ0NDgwMCwibmJmIjo0MDcwOTA4ODAwfQ.TcXGDm9CguZ21Bqlcx7bNpkiG5O4V3jBaVwsY77ahqnSJGecCIywsJ8PKaimMH1Ufj5yt6pyHKeaz17ZKMTLBj8LDv545xMPZaMfoflMrayLLLu1LLsd0cJg4pDTT6Cxdo19QIvz8uLrLyOtM5zo4mm4ub3ZCk0_sup_ZG8dciN4qjktYRpxTB80NVE36dPPfplf8cLZeN5CMcr34R6imepwOptIwma88xaQaeAsGVeBh7VKHwgSFmDNc2k117KokbOQEvqarONlNxQ83jseI0UAuY1gvInGFSDoom1hTo4zme_SWNtInP7Tbbx_KK6dzND3a7CaCV-l_ZJwwp027Q";

/// `jwt-D-21-audience-scheme-and-slash-stripped.yaml`, case "D-21 aud api.example.com satisfies audiences https".
/// Payload: `{"iss":"test-issuer-1@istio.io","sub":"sub-1","iat":1704067200,"exp":4102444800,"aud":"api.example.com"}`
pub(super) const TOKEN_AUD_API: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1lc2h3YXJkLXJzYS0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJ0ZXN0LWlzc3Vlci0xQGlzdGlvLmlvIiwic3ViIjoic3ViLTEiLCJpYXQiOjE3MDQwNjcyMDAsImV4cCI6NDEwMjQ0NDgwMCwiYXVkIjoiYXBpLmV4YW1wbGUuY29tIn0.CrsNB5NCtwHkS51SDHHp1MxBs24y747Qh_xOK6OhZSmfXmRtg9-f4MNzeOnj8MsHRyFioZAcCV-MkKr7SenESGARujLS0dqpf1yQ6gcC0_ZseSoSyZNZROyahbbU6FjHpG79Posw28tO_AmTy25-1mKgTW_iImYUVIxQ2qsI23Wss66sKtjM13NjZkoRyE2ibSudI4P3RPOEpwRdhzahrp8OqdF2VfRT7hB_5LufWMzy5rZ2wCz7RRbyjzafKc_2UZUYGlt_8wm866eipEJWxlVPm7kX6kuaHFhIiI92--B23d8ok_y-FunFwZBw_glQZ1T9jvlM7qsykq9kCx3xaQ";

/// `jwt-D-21-audience-scheme-and-slash-stripped.yaml`, case "D-21 (control) aud other.example.com is rejected by jwt_authn".
/// Payload: `{"iss":"test-issuer-1@istio.io","sub":"sub-1","iat":1704067200,"exp":4102444800,"aud":"other.example.com"}`
pub(super) const TOKEN_AUD_OTHER: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1lc2h3YXJkLXJzYS0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJ0ZXN0LWlzc3Vlci0xQGlzdGlvLmlvIiwic3ViIjoic3ViLTEiLCJpYXQiOjE3MDQwNjcyMDAsImV4cCI6NDEwMjQ0NDgwMCwiYXVkIjoib3RoZXIuZXhhbXBsZS5jb20ifQ.cvrdygJEdmjlelf3YU5zgvPpAWnyALSpT7qQgdhRJ8-4P0NmcisjF8UtPpXGr5Wctuu3KgTy4K7NYv0JnZVRttP0YySFDKWZsbf8S9zuKe5VmPjzpqZ7932X_Jy89RR9uoeAIJErAN4rAUasWWWy495eagyor7-MRW-zBoJaHjZWYeSsIuf7YVrGir68EY70yR7yOULMo0gITfIRdz2LMxJUF7K9v7DRx2oWBk5qYy9T6_a0XtJc6HhsBBOZzRGr93KFIPXCPp2wTX1Tu1Y1aQFH_G4zUkXS3oymc5TpLMS73C4wGkR-9nFNcIAOrhRhMOYVBXZYGyHHLLaAag4-qg";

/// `jwt-D-23-list-claim-any-element.yaml`, case "D-23 groups-scope token (groups [group1, group2])".
/// Payload: `{"iss":"testing@secure.istio.io","sub":"testing@secure.istio.io","iat":1704067200,"exp":4102444800,"groups":["group1","group2"],"scope":["scope1","scope2"]}`
pub(super) const TOKEN_GROUPS_SCOPE: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1lc2h3YXJkLXJzYS0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJ0ZXN0aW5nQHNlY3VyZS5pc3Rpby5pbyIsInN1YiI6InRlc3RpbmdAc2VjdXJlLmlzdGlvLmlvIiwiaWF0IjoxNzA0MDY3MjAwLCJleHAiOjQxMDI0NDQ4MDAsImdyb3VwcyI6WyJncm91cDEiLCJncm91cDIiXSwic2NvcGUiOlsic2NvcGUxIiwic2NvcGUyIl19.BAF822_RUaswujYcZvd_QbrFAhbXVagw6ELETQE1OQ6FOKMYCvm34zhz-H4I14xKeQeRausoTYXFlHLaWLkZRJCdhuW9xMWSPaqOSv9h9ziRtxrYMVVIY_Gi5xJpB_OnK8ttwYY-44_mAlAmEpWnBaasajrEEVU3qAbzhBIS0dlaRKlam_uluBELcmFwkpti31X2sq4leF4kp8dbVzFK9cMHICrpKJTtnkdQB7aXHenBpo8FJuUMNsPHiBfVY-eo9gE95JXZUsUm-SVQdx65WvB9TzUOwBufHs8ApHAJorWPCMvbdImCEOz5DIV2C0yobx-45X1Nqe8DRT6TJRvtTw";

/// `jwt-D-5-claim-to-header-replaces-client-copy.yaml`, case "D-5 valid token with nested claim and a client-supplied X-Jwt-Nested-Claim".
/// Payload: `{"iss":"test-issuer-1@istio.io","sub":"sub-1","iat":1704067200,"exp":4102444800,"nested":{"key2":"valueC","nested-2":{"key2":"valueC"}}}`
pub(super) const TOKEN_NESTED_CLAIM: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1lc2h3YXJkLXJzYS0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJ0ZXN0LWlzc3Vlci0xQGlzdGlvLmlvIiwic3ViIjoic3ViLTEiLCJpYXQiOjE3MDQwNjcyMDAsImV4cCI6NDEwMjQ0NDgwMCwibmVzdGVkIjp7ImtleTIiOiJ2YWx1ZUMiLCJuZXN0ZWQtMiI6eyJrZXkyIjoidmFsdWVDIn19fQ.U_0lU63WYIOR6u-RUeTB6cKAyiV0J5IP1_aGRXhapG5zMR8_UsFYad_KgUB7XfrLtw09pkDRj_V1AsjAtT79b3gX2Fjm7vGr2NnmJdyhgQER3OtWhV00sSb_p1TYfVhfR3Xc1t-M6ZyowA30sywvfE4FskO7cbVxxMSwPhwGOKouTcftDYK8OBAeEWmgaDXI6GYX1DoSWuB9g7TMZmfmcUKpKiyfFBwUlNWHvByfXNtGi5-Zauu4Rh3bc9L79uFIeMD7TluR-Vy3CFWlrYBUxLbS0nJkMj4gwaonxhUZX9yqGEr9Ko_Lez0tFc3P2DuZSfBoi1xJx-nsj3DCdvQbQg";

const RSA_DER: &str = "\
MIIEowIBAAKCAQEAxBf6Y+SmixHARdy4JSbmhbsnUrlRb3hdfEXrI8kuvi6FvopEoqmOVhyoUtrxR4YE31gBCZVUjEtzzXFPudwb\
lBBJzrE0Q92UMY460oqoMCGG3I9k5REzoxIMMobCFKhzMTd0nQbAADMu77JAnIJaMG4S0Ors4lm14EoJtG40SrigSUNqLuPxDGmQ\
telgsxF5z31tzZ7j3Ei3W99KQ5zQgjuYqFHR/e18mAyliYCY4aI9NEcJBUSQPgnomVYZykSJG+Ffb5n6ucTOmL7pejI5CtTImfyd\
/2wo1ZLgjBPNiDcSbd53AdCklATF3VrC++29X4VG+orD9vearON7GmA6bwIDAQABAoIBAExu8DlJoaTpaWGR0/EfRZFwzrYO5/Ak\
IYRUGIBdZavZpGYNrQ0ePA3So8WP86YmVfXcbqMWotsAegXlGedfJRzEcJBxP+cIEkByqPjx9Pa1ysRj3DbxSohQe5KiNjopIqVX\
cUvXmrU5Ph1OBKM8p/zimtD2ERl1UFA5a6j5n8ZTm3c8vDdZColmG4M/KdfEnUm4gvFFKDDXFypU/5via7Wc91mFLPuVVR1Io8yr\
/0AZnu7JR1Gso5s5RBlh+sVix0EEJiQWE20HO/q6w8bPui/aA4AC7pCRPlVrWV3etkQI/UbYjyAa4GqQlzaSs0lli+lRTR3kJtAj\
bKvWIX6VrGECgYEA8XAlzZSUq3gjIn4nBN1MT3RjQlKmSeASxC9w95zgXcm0H/aAQ0ZmGFhEUfQjKwiUjXocBVzjwOljhFbVE4n4\
qRUM8HcSzrKDBUAo+KeAI/3CjyQ2/06UrcajPckrzdPCQHT4TuVs0A1lTpDiiUmTQw5m0wX0nX0AfrzUf6gJOVECgYEAz+u0Htye\
mneY2TbSCBDVHoHOsOjBh1CrXLIvygJIUpyK1DyFdX7A9VMd1FEhYYAX99utiy3qXNN2tLnmVJ2pVuoGHmAUDK4RmlhtjIMCZ6H4\
FbP2FAcjmF/sWdKMj6BrtR82h5biE4G7enlRHN0ggpslV+nKZ9Bbxv4cVmzJR78CgYEAmxIJ5cHRv1Q5VNUr4I72jW3Wtul4zqgx\
xXonF5LV9McxfvoHJa6Ysng24WBqGiC3sSrFxpgD3IrKlVxkHNmYMZlIp0YDeWjkiEHOTu7eeb9p8CA1hsOE8RxNCskj7l5dPKMk\
PSBUREjmUZDzP3RXNlGQr2b61xBLeht0bM2TpxECgYAnuhd+VhUP2o4f4rOayuyNmavObYqcujMj0QAEjw8WicaU6sNtQbzIowru\
CFpicMEjoJu2Hh3LgrQJsANsY3t5mdl1cFIkYhYG8aJs2JNbDb2DGBGKnhqVAK7+Mpac0sABqWcX3SJxK7aQniF7bFzL16z48Ti1\
QUBn8yGi+cIzrQKBgBoKqISLezu3LrQIHU03iNxlv6mooGrxUJAjc1a2wOl9EeUNZaYLPN7wjDapaAfcscBjKR2070fuEAsM22Kk\
yu4mKeUsji7mw303yo9TR3g3ovCd1hys/P5qxKWCMPK55y7fB34VPB69aL36nBNSUTOfROKxj31B4ulrFBGTSGOA";

const EC_P256_PKCS8: &str = "\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg0p55YvYb53uZ9U2iSsP7DB4dNfVTm2zvTDl7YsEw88qhRANCAARr\
FoKgzdbIxxVVxtUHPFFE00vdK7DEG+9OBCevtANhdX+WLz1vUzUY/3qP/IXhk+r6dKD9aG5cX8wJTGbw9Wio";

const EC_P384_PKCS8: &str = "\
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDBbd9xbgK3KYIyl2MPYlv1nrouU90QFrVuN5VOoSortT+hvXDPjV4Ak\
POt0mI5I8jihZANiAATAPiJNkJp9EU0XVfQXo22IGNWJw3m5HhFUZwsZS7FV6an7MFsrHsP9zzd4ehXCtuW0r2vllqwJRrrXJcF0\
+iNyr6Wv5wHSn+ViDE7BQgGYeMH/9XE1yYr7nt1z2UyOnWc=";

const ED25519_PKCS8: &str = "MC4CAQAwBQYDK2VwBCIEIAXZcApbgHjrf1BnatoO+Z0fvqOJT8dE7TuyPR2APApX";

/// The HMAC secret of the `oct` test key.
const HMAC_SECRET: &[u8] = b"meshward-test-hmac-secret-0123456789";

/// The issuer of crafted tokens.
pub(super) const TEST_ISSUER: &str = "https://issuer.test";

/// A throw-away signing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TestKey {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
    Hmac,
}

impl TestKey {
    fn der(self) -> Vec<u8> {
        let b64 = match self {
            Self::Rsa => RSA_DER,
            Self::EcP256 => EC_P256_PKCS8,
            Self::EcP384 => EC_P384_PKCS8,
            Self::Ed25519 => ED25519_PKCS8,
            Self::Hmac => return HMAC_SECRET.to_vec(),
        };
        STANDARD.decode(b64).unwrap()
    }

    fn encoding_key(self) -> EncodingKey {
        let der = self.der();
        match self {
            Self::Rsa => EncodingKey::from_rsa_der(&der),
            Self::EcP256 | Self::EcP384 => EncodingKey::from_ec_der(&der),
            Self::Ed25519 => EncodingKey::from_ed_der(&der),
            Self::Hmac => EncodingKey::from_secret(&der),
        }
    }

    /// The key's `kid` in [`test_jwks`].
    pub(super) fn kid(self) -> &'static str {
        match self {
            Self::Rsa => "rsa-1",
            Self::EcP256 => "ec256-1",
            Self::EcP384 => "ec384-1",
            Self::Ed25519 => "ed-1",
            Self::Hmac => "hmac-1",
        }
    }

    /// The public JWK of this key, with `kid` and, when given, `alg`.
    pub(super) fn jwk(self, kid: &str, alg: Option<&str>) -> Value {
        let utils = &DEFAULT_PROVIDER.key_utils;
        let der = self.der();
        let mut jwk = match self {
            Self::Rsa => {
                let (n, e) = (utils.rsa_pub_components_from_private_key)(&der).unwrap();
                json!({"kty": "RSA", "n": b64(&n), "e": b64(&e)})
            }
            Self::EcP256 | Self::EcP384 => {
                let (alg, crv) = if self == Self::EcP256 {
                    (Algorithm::ES256, "P-256")
                } else {
                    (Algorithm::ES384, "P-384")
                };
                let (_, x, y) = (utils.ec_pub_components_from_private_key)(&der, alg).unwrap();
                json!({"kty": "EC", "crv": crv, "x": b64(&x), "y": b64(&y)})
            }
            Self::Ed25519 => {
                let x = (utils.ed_pub_components_from_private_key)(
                    &der,
                    &jsonwebtoken::jwk::EllipticCurve::Ed25519,
                )
                .unwrap();
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&x)})
            }
            Self::Hmac => json!({"kty": "oct", "k": b64(&der)}),
        };
        jwk["kid"] = json!(kid);
        if let Some(alg) = alg {
            jwk["alg"] = json!(alg);
        }
        jwk
    }
}

/// base64url without padding.
pub(super) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A JWKS document holding `keys`.
pub(super) fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// A JWKS with every test key under its [`TestKey::kid`], no `alg`.
pub(super) fn test_jwks() -> String {
    let keys = [
        TestKey::Rsa,
        TestKey::EcP256,
        TestKey::EcP384,
        TestKey::Ed25519,
        TestKey::Hmac,
    ];
    jwks(&keys.map(|key| key.jwk(key.kid(), None)))
}

/// Signs `header` and `payload` (JSON text, used verbatim) with `key` under `alg`.
pub(super) fn sign_raw(key: TestKey, alg: Algorithm, header: &str, payload: &str) -> String {
    let message = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let signer = (DEFAULT_PROVIDER.signer_factory)(&alg, &key.encoding_key()).unwrap();
    let signature = signer.try_sign(message.as_bytes()).unwrap();
    format!("{message}.{}", b64(&signature))
}

/// Signs `claims` with `key` under `alg`, header `{"alg", "kid"}`.
pub(super) fn sign(key: TestKey, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    let alg_name = serde_json::to_value(alg).unwrap();
    let mut header = json!({ "alg": alg_name, "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    sign_raw(key, alg, &header.to_string(), &claims.to_string())
}

/// A valid RS256 token of [`TEST_ISSUER`] with `extra` merged into standard claims.
pub(super) fn rsa_token(extra: &Value) -> String {
    sign(
        TestKey::Rsa,
        Algorithm::RS256,
        Some("rsa-1"),
        &claims(extra),
    )
}

/// `iss`, `sub`, `iat`, `exp` (an hour after [`NOW`]) with `extra` merged in.
pub(super) fn claims(extra: &Value) -> Value {
    let mut claims = json!({
        "iss": TEST_ISSUER,
        "sub": "alice",
        "iat": NOW - 10,
        "exp": NOW + 3600,
    });
    if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            claims.insert(k.clone(), v.clone());
        }
    }
    claims
}

/// A token whose sections are given verbatim (header and payload as JSON text).
pub(super) fn unsigned(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.as_bytes()),
        b64(payload.as_bytes())
    )
}

/// A rule for `issuer` with the given inline JWKS.
pub(super) fn rule_with(issuer: &str, jwks: &str) -> JwtRuleConfig {
    JwtRuleConfig {
        issuer: issuer.to_owned(),
        jwks: Some(jwks.to_owned()),
        ..JwtRuleConfig::default()
    }
}

/// A rule for `issuer` with the corpus keys.
pub(super) fn corpus_rule(issuer: &str) -> JwtRuleConfig {
    rule_with(issuer, CORPUS_JWKS)
}

/// A rule for [`TEST_ISSUER`] with every test key.
pub(super) fn test_rule() -> JwtRuleConfig {
    rule_with(TEST_ISSUER, &test_jwks())
}

pub(super) fn authenticator(rules: &[JwtRuleConfig]) -> JwtAuthenticator {
    JwtAuthenticator::new(
        rules
            .iter()
            .map(|rule| JwtProvider::compile(rule).unwrap())
            .collect(),
    )
}

pub(super) fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(super) fn bearer(token: &str) -> Vec<(String, String)> {
    headers(&[("authorization", &format!("Bearer {token}"))])
}

/// Runs a `GET` at [`NOW`].
pub(super) fn get(
    authn: &JwtAuthenticator,
    path: &str,
    headers: &[(String, String)],
) -> JwtOutcome {
    request(authn, "GET", path, headers, NOW)
}

pub(super) fn request(
    authn: &JwtAuthenticator,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    now: i64,
) -> JwtOutcome {
    authn.authenticate(
        &JwtRequest {
            method,
            path,
            headers: &crate::attributes::borrow_headers(headers),
        },
        now,
    )
}

#[track_caller]
pub(super) fn verified(outcome: JwtOutcome) -> VerifiedJwt {
    match outcome {
        JwtOutcome::Verified(verified) => verified,
        other => panic!("expected a verified token, got {other:?}"),
    }
}

#[track_caller]
pub(super) fn rejected(outcome: JwtOutcome) -> JwtRejection {
    match outcome {
        JwtOutcome::Rejected(rejection) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[track_caller]
pub(super) fn no_token(outcome: JwtOutcome) -> HeaderMutations {
    match outcome {
        JwtOutcome::NoToken(mutations) => mutations,
        other => panic!("expected no token, got {other:?}"),
    }
}

/// The message of a rejected `GET` carrying `token` as a bearer token.
#[track_caller]
pub(super) fn rejection_message(authn: &JwtAuthenticator, token: &str) -> &'static str {
    rejected(get(authn, "/", &bearer(token))).message
}

pub(super) fn claim_to_header(header: &str, claim: &str) -> ClaimToHeader {
    ClaimToHeader {
        header: header.to_owned(),
        claim: claim.to_owned(),
    }
}

pub(super) fn sorted(mut headers: Vec<(String, String)>) -> Vec<(String, String)> {
    headers.sort();
    headers
}

/// The headers the upstream receives, sorted.
pub(super) fn upstream_headers(
    request: &[(String, String)],
    mutations: &HeaderMutations,
) -> Vec<(String, String)> {
    let view = mutations.view(&crate::attributes::borrow_headers(request));
    sorted(
        view.into_iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect(),
    )
}

/// Signs sections given verbatim (already encoded), so padding and odd encodings can be tested.
pub(super) fn sign_sections(
    key: TestKey,
    alg: Algorithm,
    header_b64: &str,
    payload_b64: &str,
) -> String {
    let message = format!("{header_b64}.{payload_b64}");
    let signer = (DEFAULT_PROVIDER.signer_factory)(&alg, &key.encoding_key()).unwrap();
    let signature = signer.try_sign(message.as_bytes()).unwrap();
    format!("{message}.{}", b64(&signature))
}

/// [`test_rule`] reading the whole `x-jwt` header as the token, so malformed tokens reach the
/// parser unchanged.
pub(super) fn raw_header_rule() -> JwtRuleConfig {
    JwtRuleConfig {
        from_headers: vec![super::super::HeaderLocation {
            name: "x-jwt".to_owned(),
            prefix: None,
        }],
        ..test_rule()
    }
}

/// The outcome of a `GET` carrying `token` verbatim in `x-jwt`, against [`raw_header_rule`].
pub(super) fn raw(token: &str) -> JwtOutcome {
    let authn = authenticator(&[raw_header_rule()]);
    get(&authn, "/", &headers(&[("x-jwt", token)]))
}
