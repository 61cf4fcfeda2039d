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

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn problem(&self) -> Problem {
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Sends `head` (request line and headers, CRLF-separated, without the final blank line) and `body`
/// exactly as given, over a raw TCP connection: for requests that HTTP clients would normalise.
pub async fn raw_request(base: &str, head: &str, body: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = head.replace('\n', "\r\n").into_bytes();
    request.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    request.extend_from_slice(body);
    // The server may answer and close before reading everything (e.g. 413): ignore write errors.
    let _ = stream.write_all(&request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| {
            l.split_once(':')
                .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        })
        .collect::<Vec<_>>();
    let mut body = buf[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
    out
}

/// The payload of a JWT, decoded.
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

/// The header of a JWT, decoded.
pub fn jwt_header(token: &str) -> serde_json::Value {
    use base64::Engine as _;
    let head = token.split('.').next().unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .unwrap(),
    )
    .unwrap()
}

/// Base64url without padding.
pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The server's active signing key (to craft tokens that are validly signed but wrong otherwise).
pub async fn server_signing_key(app: &secureflows_testkit::TestApp) -> secureflows_crypto::jws::SigningKey {
    app.services()
        .keys
        .signing_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|(record, _)| record.retired_at.is_none())
        .unwrap()
        .1
}

/// `GET path` with a bearer token.
pub async fn get_with(app: &secureflows_testkit::TestApp, path: &str, token: &str) -> reqwest::Response {
    app.http
        .get(format!("{}{path}", app.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// `GET path` (no credentials), decoded as JSON.
pub async fn get_json(app: &secureflows_testkit::TestApp, path: &str) -> serde_json::Value {
    app.http
        .get(format!("{}{path}", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A chunked request body (`Transfer-Encoding: chunked`) of the given chunks.
pub fn chunked(chunks: &[&[u8]]) -> Vec<u8> {
    let mut body = Vec::new();
    for chunk in chunks {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    body
}

/// Runs one statement on the raw database; `?1`/`?2` (SQLite) or `$1`/`$2` (PostgreSQL) are text ids.
pub async fn raw_execute(
    app: &secureflows_testkit::TestApp,
    sqlite: &str,
    postgres: &str,
    params: &[String],
) -> u64 {
    match &app.raw {
        secureflows_server::RawStore::Sqlite(_) => {
            let conn = rusqlite::Connection::open(app.data_dir.join("secureflows.db")).unwrap();
            conn.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            // Ids are 16-byte blobs in SQLite.
            let ids: Vec<uuid::Uuid> = params.iter().map(|p| uuid::Uuid::parse_str(p).unwrap()).collect();
            conn.execute(sqlite, rusqlite::params_from_iter(ids.iter()))
                .unwrap() as u64
        }
        secureflows_server::RawStore::Postgres(_) => {
            let pool = app.owner_pool().await;
            let mut q = sqlx::query(postgres);
            for p in params {
                q = q.bind(p.clone());
            }
            q.execute(&pool).await.unwrap().rows_affected()
        }
    }
}

/// Runs a `select count(*)` on the raw database.
pub async fn raw_count(app: &secureflows_testkit::TestApp, sqlite: &str, postgres: &str) -> i64 {
    match &app.raw {
        secureflows_server::RawStore::Sqlite(_) => {
            let conn = rusqlite::Connection::open(app.data_dir.join("secureflows.db")).unwrap();
            conn.query_row(sqlite, [], |r| r.get(0)).unwrap()
        }
        secureflows_server::RawStore::Postgres(_) => sqlx::query_scalar(postgres)
            .fetch_one(&app.owner_pool().await)
            .await
            .unwrap(),
    }
}

/// A management API call with a console token and an optional JSON body.
pub async fn call(
    app: &secureflows_testkit::TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.url))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

/// A management API call that must succeed with `status`; returns the JSON body (`null` if empty).
pub async fn call_ok(
    app: &secureflows_testkit::TestApp,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
    status: u16,
) -> serde_json::Value {
    let response = call(app, method, path, token, body).await;
    let got = response.status().as_u16();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "{method} {path}: {text}");
    if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    }
}
