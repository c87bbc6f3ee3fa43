//! The playground page in headless Chromium (WebDriver, driven with shelf's own HTTP client)
//! against a running `shelf serve --demo`: type a query, see results, open an explanation,
//! compare a shopper with anonymous results, sort, page and refine, open a product page
//! with its similar items and bought together, check the phone layout; screenshots are saved
//! under the test's target temp dir. Needs Debian's `chromium` and `chromium-driver`
//! (`.ci/run` installs them).

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use serde_json::{json, Value};
use shelf_api::client::{HttpTransport, Transport};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed with its whole process group when dropped (also on a failed
/// assertion), so no browser outlives the test.
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn own_group(command: &mut Command) -> &mut Command {
    std::os::unix::process::CommandExt::process_group(command, 0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A WebDriver session.
struct Browser {
    driver: HttpTransport,
    session: String,
}

impl Browser {
    async fn cmd(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, value) = self
            .driver
            .call(
                method.clone(),
                &format!("/session/{}{path}", self.session),
                body,
            )
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK, "{method} {path}: {value}");
        value["value"].clone()
    }

    async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (status, value) = self
                .driver
                .call(
                    Method::POST,
                    &format!("/session/{}/element", self.session),
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await
                .unwrap();
            if status == StatusCode::OK {
                return value["value"]
                    .as_object()
                    .unwrap()
                    .values()
                    .next()
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string();
            }
            assert!(Instant::now() < deadline, "no element {css}: {value}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn script(&self, js: &str) -> Value {
        self.cmd(
            Method::POST,
            "/execute/sync",
            Some(json!({"script": js, "args": []})),
        )
        .await
    }

    async fn set(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.cmd(
            Method::POST,
            &format!("/element/{id}/clear"),
            Some(json!({})),
        )
        .await;
        self.cmd(
            Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.cmd(
            Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// The result ids of a column once they differ from `before` (a new search landed).
    async fn results(&self, column: &str, before: &[String]) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ids: Vec<String> = serde_json::from_value(
                self.script(&format!(
                    "return Array.from(document.querySelectorAll('#{column} li[data-id]')).map(li => li.dataset.id);"
                ))
                .await,
            )
            .unwrap();
            if !ids.is_empty() && ids != before {
                return ids;
            }
            let error = self
                .script("return document.getElementById('error').textContent;")
                .await;
            assert_eq!(error, "", "the page shows an error");
            assert!(Instant::now() < deadline, "no results in {column}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let png = self.cmd(Method::GET, "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, bytes).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

/// Waits for the playground's product page of `id`; returns its similar items' ids.
async fn product_page(browser: &Browser, id: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shown = browser
            .script(&format!(
                "const p = document.getElementById('product'); \
                 return !p.hidden && document.getElementById('product-details').dataset.id === {}",
                json!(id)
            ))
            .await;
        if shown == json!(true) {
            break;
        }
        let error = browser
            .script("return document.getElementById('error').textContent;")
            .await;
        assert_eq!(error, "", "the page shows an error");
        assert!(Instant::now() < deadline, "no product page for {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serde_json::from_value(
        browser
            .script("return Array.from(document.querySelectorAll('#similar li[data-id]')).map(li => li.dataset.id);")
            .await,
    )
    .unwrap()
}

/// `shelf serve --demo` with `extra` flags on a free port, once the shop is ready: the
/// server (killed when dropped) and its base URL.
fn start_demo(extra: &[&str]) -> (Killed, String) {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = own_group(&mut Command::new(env!("CARGO_BIN_EXE_shelf")))
        .arg("serve")
        .arg("--demo")
        .args(extra)
        .args([
            "--fsync",
            "never",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let server = Killed(server);
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .expect("shelf exited before the shop was ready")
            .unwrap();
        if line.contains("the shop is ready") {
            break;
        }
    }
    // The data directory lives as long as the server's output is drained.
    std::thread::spawn(move || {
        lines.for_each(drop);
        drop(data);
    });
    (server, format!("http://127.0.0.1:{port}"))
}

/// Headless Chromium through chromedriver, on the playground at `base`: the driver (killed
/// when dropped) and the session.
async fn open_playground(base: &str) -> (Killed, Browser) {
    let chromedriver = ["chromedriver", "/usr/bin/chromedriver"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .expect(
            "chromedriver not found: install Debian's chromium and chromium-driver (.ci/run does)",
        );
    let driver_port = free_port();
    let driver_process = Killed(
        own_group(&mut Command::new(chromedriver))
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let driver = HttpTransport::new(&format!("http://127.0.0.1:{driver_port}"), None);
    let capabilities = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"]
    }}}});
    let deadline = Instant::now() + Duration::from_secs(30);
    let session = loop {
        match driver
            .call(Method::POST, "/session", Some(capabilities.clone()))
            .await
        {
            Ok((StatusCode::OK, v)) => break v["value"]["sessionId"].as_str().unwrap().to_string(),
            other => {
                assert!(Instant::now() < deadline, "no WebDriver session: {other:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let browser = Browser { driver, session };
    browser
        .cmd(
            Method::POST,
            "/url",
            Some(json!({"url": format!("{base}/")})),
        )
        .await;
    (driver_process, browser)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chinese_query_finds_chinese_titles_in_chromium() {
    // The demo shop in Chinese with the multilingual model (make test fetches it).
    let (server, base) = start_demo(&[
        "--demo-language",
        "zh",
        "--model-name",
        "multilingual-e5-small",
        "--demo-items",
        "310",
        // The shoppers shop at the default rate while the test waits: their popular items
        // must not push the query's own out of the top 5 (the relevance gap, a share of the
        // best match's margin over the catalogue's mean, keeps e5's close-together
        // similarities apart).
        "--demo-users",
        "2",
    ]);
    // Every item in both indexes (the lexical one commits after the vector one).
    let api = HttpTransport::new(&base, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = api.call(Method::GET, "/ready", None).await.unwrap();
        if body["pending_items"] == json!(0) {
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_driver, browser) = open_playground(&base).await;
    browser.set("#query", "灰色沙发").await;
    browser.click("#go").await;
    let ids = browser.results("col-a", &[]).await;
    assert!(ids.len() >= 5, "{ids:?}");
    let titles: Vec<String> = serde_json::from_value(
        browser
            .script("return Array.from(document.querySelectorAll('#col-a li .title')).map(t => t.textContent);")
            .await,
    )
    .unwrap();
    let sofas = titles.iter().take(5).filter(|t| t.contains("沙发")).count();
    assert!(sofas >= 3, "sofas in the top 5: {titles:?}");
    browser.screenshot("playground-chinese.png").await;
    browser.cmd(Method::DELETE, "", None).await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_playground_searches_explains_and_compares_in_chromium() {
    // The demo shop, small, with four busy shoppers so their profiles fill quickly.
    let (server, base) = start_demo(&[
        "--demo-items",
        "620",
        "--demo-users",
        "4",
        "--demo-rate",
        "25",
    ]);
    // Let the shoppers shop, then wait until their events are applied.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let api = HttpTransport::new(&base, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = api
            .call(Method::GET, "/v1/users/user-00000/profile", None)
            .await
            .unwrap();
        if status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "user-00000 never got a profile");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_driver, browser) = open_playground(&base).await;

    // Type a query, see results.
    browser.set("#query", "jacket").await;
    browser.click("#go").await;
    let anonymous = browser.results("col-a", &[]).await;
    assert!(anonymous.len() >= 5, "{anonymous:?}");
    let title = browser
        .script("return document.querySelector('#col-a li .title').textContent;")
        .await;
    assert!(
        title.as_str().unwrap().to_lowercase().contains("jacket"),
        "{title}"
    );

    // Open an explanation: one row per feature.
    browser.click("#col-a li details summary").await;
    let rows = browser
        .script("const d = document.querySelector('#col-a li details'); return d.open ? d.querySelectorAll('tr').length : 0;")
        .await;
    assert_eq!(
        rows.as_u64(),
        Some(shelf_types::FEATURE_COUNT as u64),
        "{rows}"
    );
    browser.screenshot("playground-explanation.png").await;

    // Switch to a shopper and compare with anonymous results: the ranking changes.
    browser.set("#user", "user-00000").await;
    browser
        .script("const s = document.getElementById('compare'); s.value = 'anonymous'; s.dispatchEvent(new Event('change'));")
        .await;
    browser.click("#go").await;
    let personal = browser.results("col-a", &anonymous).await;
    let side = browser.results("col-b", &[]).await;
    assert_ne!(
        personal, side,
        "personalised and anonymous results are identical"
    );
    // The profile re-ranks; it does not override what was asked for.
    let title = browser
        .script("return document.querySelector('#col-a li .title').textContent;")
        .await;
    assert!(
        title.as_str().unwrap().to_lowercase().contains("jacket"),
        "{title}"
    );
    let profile = browser
        .script("return document.querySelector('#col-a .profile').textContent;")
        .await;
    assert!(
        profile.as_str().unwrap().contains("top categories"),
        "{profile}"
    );
    browser.screenshot("playground-compare.png").await;

    // Sorting, paging and the facet sidebar (anonymous, one column again).
    browser.set("#user", "").await;
    browser
        .script("const s = document.getElementById('compare'); s.value = ''; s.dispatchEvent(new Event('change'));")
        .await;
    browser
        .script("document.getElementById('sort').value = 'price_asc';")
        .await;
    browser.click("#go").await;
    let cheapest_first = browser.results("col-a", &personal).await;
    let prices = |column: &'static str| {
        let browser = &browser;
        async move {
            let v = browser
                .script(&format!(
                    "return Array.from(document.querySelectorAll('#{column} li[data-id] .row span:nth-child(2)')).map(s => parseFloat(s.textContent.replace('price ', '')));"
                ))
                .await;
            serde_json::from_value::<Vec<f64>>(v).unwrap()
        }
    };
    let first_page = prices("col-a").await;
    assert!(
        first_page.windows(2).all(|w| w[0] <= w[1]),
        "{first_page:?}"
    );
    browser.click("#col-a .pager button.next").await;
    let second = browser.results("col-a", &cheapest_first).await;
    assert!(
        second.iter().all(|id| !cheapest_first.contains(id)),
        "pages overlap"
    );
    let second_page = prices("col-a").await;
    assert!(
        first_page.last() <= second_page.first(),
        "{first_page:?} then {second_page:?}"
    );
    let facets = browser
        .script("return Array.from(document.querySelectorAll('#facets button.facet')).map(b => b.dataset.facet);")
        .await;
    for group in ["category", "brand", "price", "availability"] {
        assert!(
            facets.as_array().unwrap().contains(&json!(group)),
            "{facets}"
        );
    }
    // A category count narrows the search to that category.
    let category = browser
        .script("const b = document.querySelector('#facets button.facet[data-facet=category]'); return b.firstChild.textContent;")
        .await;
    browser
        .click("#facets button.facet[data-facet=category]")
        .await;
    let narrowed = browser.results("col-a", &second).await;
    assert!(!narrowed.is_empty());
    let in_category = browser
        .script(&format!(
            "return Array.from(document.querySelectorAll('#col-a li[data-id] .row span:first-child')).every(s => s.textContent.startsWith({category}));"
        ))
        .await;
    assert_eq!(in_category, json!(true), "results outside {category}");
    browser.screenshot("playground-facets.png").await;
    browser.set("#category", "").await;
    browser
        .script("document.getElementById('sort').value = 'relevance';")
        .await;

    // A result's title opens its product page: the item, its similar items (never itself),
    // and bought together (a list, or why it is empty); a similar item's title opens that
    // one, and back returns to the results.
    let first = narrowed[0].clone();
    browser.click("#col-a li[data-id] a.title").await;
    let similar = product_page(&browser, &first).await;
    assert!(!similar.is_empty(), "no similar items for {first}");
    assert!(!similar.contains(&first), "{first} is similar to itself");
    let together = browser
        .script("return document.getElementById('together').textContent;")
        .await;
    assert!(
        !together.as_str().unwrap().is_empty(),
        "bought together shows neither items nor a reason"
    );
    browser.screenshot("playground-product.png").await;
    browser.click("#similar li[data-id] a.title").await;
    let next = product_page(&browser, &similar[0]).await;
    assert!(!next.contains(&similar[0]), "{next:?}");
    browser.click("#back").await;
    let back = browser
        .script("return [document.getElementById('product').hidden, document.getElementById('layout').hidden];")
        .await;
    assert_eq!(back, json!([true, false]));

    // API errors are shown, not swallowed.
    browser.set("#price-min", "100").await;
    browser.set("#price-max", "10").await;
    browser.click("#go").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let error = browser
            .script("return document.getElementById('error').textContent;")
            .await;
        if error.as_str().unwrap().contains("422") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no error shown for an inverted price range"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Phone width: nothing overflows sideways.
    browser
        .cmd(
            Method::POST,
            "/window/rect",
            Some(json!({"width": 390, "height": 844})),
        )
        .await;
    let overflow = browser
        .script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        )
        .await;
    assert!(
        overflow.as_i64().unwrap() <= 0,
        "horizontal overflow of {overflow}px at phone width"
    );
    browser.screenshot("playground-phone.png").await;
    browser.cmd(Method::DELETE, "", None).await;
    drop(server);
}
