//! Splitting, loading and JWKS inlining of snapshot documents.

use super::proto::{Document, FetchedJwks, fetched_jwks};
use super::*;

const STREAM: &str = "# leading comment\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: foo\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: foo\nspec:\n  ports:\n  - port: 80\n--- \n# only a comment\n...\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: a\n- apiVersion: v1\n  kind: Namespace\n  metadata:\n    name: b\n";

#[test]
fn documents_are_cut_at_markers_with_their_first_line() {
    let docs = split_documents(STREAM);
    let firsts: Vec<u32> = docs.iter().map(|d| d.first_line).collect();
    assert_eq!(firsts, [1, 6, 18]);
    assert!(
        docs[1]
            .text
            .starts_with("---\napiVersion: v1\nkind: Service")
    );
    assert!(docs[2].text.starts_with("apiVersion: v1\nkind: List"));
}

#[test]
fn a_document_keeps_its_original_lines_and_one_list_item() {
    let docs = split_documents(STREAM);
    let list = &docs[2];
    let doc = |item: &str| Document {
        origin: "mesh.yaml".into(),
        first_line: list.first_line,
        text: list.text.clone(),
        item: item.into(),
    };
    let all = load_document(&doc(""));
    assert_eq!(all.resources.len(), 2);
    let one = load_document(&doc("items[1]"));
    assert_eq!(one.resources.len(), 1);
    assert_eq!(one.resources[0].resource.metadata().name(), "b");
    // Line numbers are those of the whole file.
    assert_eq!(one.resources[0].origin.start().map(|l| l.line), Some(25));
}

#[test]
fn errors_name_the_original_file_line() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: bad\nspec:\n  action: MAYBE\n";
    let docs = split_documents(text);
    let bad = &docs[1];
    let report = load_document(&Document {
        origin: "policies/bad.yaml".into(),
        first_line: bad.first_line,
        text: bad.text.clone(),
        item: String::new(),
    });
    let error = report.errors().next().expect("an error").to_string();
    assert!(error.starts_with("policies/bad.yaml:11:"), "{error}");
    assert!(error.contains("spec.action"), "{error}");
}

#[test]
fn fetched_jwks_are_inlined_only_where_missing() {
    let text = "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata:\n  name: ra\n  namespace: foo\nspec:\n  jwtRules:\n  - issuer: a\n    jwksUri: https://a.example/jwks\n  - issuer: b\n    jwksUri: https://b.example/jwks\n  - issuer: c\n    jwks: '{\"keys\":[]}'\n";
    let mut report = load_text(text, "ra.yaml", None);
    assert!(!report.has_errors());
    assert_eq!(
        report_jwks_uris(&report).into_iter().collect::<Vec<_>>(),
        ["https://a.example/jwks", "https://b.example/jwks"]
    );
    inline_jwks(
        &mut report,
        &[
            FetchedJwks {
                uri: "https://a.example/jwks".into(),
                result: Some(fetched_jwks::Result::Document("{\"keys\":[1]}".into())),
            },
            FetchedJwks {
                uri: "https://b.example/jwks".into(),
                result: Some(fetched_jwks::Result::Error("refused".into())),
            },
        ],
    );
    let Resource::RequestAuthentication(ra) = &report.resources[0].resource else {
        panic!("not a RequestAuthentication");
    };
    let rules: Vec<_> = ra.spec.jwt_rules.iter().flatten().flatten().collect();
    assert_eq!(rules[0].jwks.as_deref(), Some("{\"keys\":[1]}"));
    assert_eq!(rules[1].jwks, None);
    assert_eq!(rules[2].jwks.as_deref(), Some("{\"keys\":[]}"));
}
