//! Helpers shared by the HTTP tests.

use reqwest::Response;
use secureflows_api_types::Problem;

/// Asserts a problem response: status, `application/problem+json`, and the problem slug.
pub async fn assert_problem(response: Response, status: u16, slug: &str) -> Problem {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status for expected problem `{slug}`"
    );
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let text = response.text().await.unwrap();
    let problem: Problem =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a problem body ({e}): {text}"));
    assert_eq!(problem.slug(), slug, "problem: {text}");
    assert_eq!(problem.status, status);
    assert!(problem.type_.starts_with("urn:secureflows:problem:"));
    problem
}

/// A marker that cannot occur by chance.
pub fn marker(label: &str) -> String {
    format!("SFMARK-{label}-{}", uuid::Uuid::new_v4().simple())
}
