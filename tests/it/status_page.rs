//! The status page in a real browser (Debian's Chromium through its WebDriver, headless):
//! sign in with a token, the header names the login and its permissions, the tabs are a
//! tablist that arrow keys move through, `/favicon.ico` is served, the list shows only the
//! caller's scripts, a script's week grid has hour labels and gridlines and shows its break
//! as a gap with its exact times in the browser's zone (`TZ` of the browser: +05:00) and,
//! switched, in the scripts' zone, a published occurrence appears in the live list within
//! 2 s and its webhook call with its state, the explain form names the break, an occurrence
//! can be looked up, health shows its components; also at a phone's width. Screenshots of
//! each step go to `target/status-page/`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium`, `chromium-driver`; `scripts/test`
//! installs them): the test fails with that message when they are missing.

use crate::support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::TestClient;
use crate::support::daemon::{Daemon, DaemonOptions, script};
use crate::support::webhook_receiver::WebhookReceiver;
use chrono::Datelike;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const SIDEBAR: i64 = 2;
const WEBHOOK: i64 = 5;
const FACE: i64 = 1;

/// The browser's own zone in this test: a fixed +05:00 with no DST, unlike the daemon's UTC.
const BROWSER_TZ: &str = "Asia/Tashkent";

/// `chromedriver` on a free loopback port; killed on drop.
pub(crate) struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    pub(crate) async fn start() -> Driver {
        support::tools::require("chromium");
        let port = support::free_port();
        let child = Command::new(support::tools::require("chromedriver"))
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            // Chromium takes its local zone from `TZ`.
            .env("TZ", BROWSER_TZ)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        support::wait_for_port(port, Duration::from_secs(20)).await;
        Driver { child, port }
    }

    /// A browser session with `extra` command-line switches.
    pub(crate) async fn browser_with(&self, extra: &[String]) -> Client {
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1280,1100",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-sync",
            "--disable-component-update",
            "--disable-default-apps",
        ]
        .map(String::from)
        .to_vec();
        args.extend_from_slice(extra);
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), json!({ "args": args }));
        // Plain HTTP to the driver on loopback: no TLS stack needed.
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join("status-page");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    std::fs::write(shots().join(format!("{name}.png")), png).expect("write screenshot");
}

pub(crate) async fn wait_css(c: &Client, css: &str, secs: u64) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(secs))
        .every(Duration::from_millis(50))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} did not appear within {secs} s: {e}"))
}

/// Clicks the element `css` finds.
pub(crate) async fn click(c: &Client, css: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    e.click().await.unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Types `text` into the element `css` finds.
async fn type_into(c: &Client, css: &str, text: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
    e.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
}

async fn attr(e: &fantoccini::elements::Element, name: &str) -> String {
    e.attr(name).await.expect("attribute").unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_and_sees_scripts_weeks_live_reactions_and_reasons() {
    walkthrough(false).await;
}

/// The same walk over HTTPS (`api.tls.*`, a certificate from a test CA). Chromium is told
/// to accept exactly that certificate's key (`--ignore-certificate-errors-spki-list`), not
/// every certificate error: a wrong certificate would still fail the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_walkthrough_works_over_https() {
    walkthrough(true).await;
}

async fn walkthrough(https: bool) {
    let driver = Driver::start().await;
    let certs = tempfile::tempdir().expect("temp dir");
    let (d, switches) = if https {
        let ca = crate::api_https::TestCa::new();
        let (cert, key) = ca.issue(certs.path(), "status page");
        let pin = crate::api_https::pin_in(certs.path());
        let d = Daemon::start(crate::api_https::https_options(&ca, &cert, &key)).await;
        (d, vec![format!("--ignore-certificate-errors-spki-list={pin}")])
    } else {
        (Daemon::start(DaemonOptions::default()).await, Vec::new())
    };
    // A holiday calendar with this week's Wednesday (the daemon's zone is UTC) in it: the
    // office script keeps holiday hours 10:00-16:00 that day instead of its weekday hours.
    let today = chrono::Utc::now().date_naive();
    let monday = today - chrono::Duration::days(i64::from(today.weekday().num_days_from_monday()));
    let wednesday = (monday + chrono::Duration::days(2)).to_string();
    let calendar = d
        .client()
        .post(d.url("/calendars"))
        .bearer_auth(&d.token)
        .json(&json!({"name": "Public holidays", "timezone": "UTC",
                      "dates": [{"from": wednesday, "to": wednesday, "title": "Founders' Day"}]}))
        .send()
        .await
        .expect("POST /calendars");
    assert_eq!(calendar.status(), 201);
    let calendar = calendar.json::<Value>().await.expect("json")["id"].as_i64().expect("id");
    let office = json!({"days": [{"type": "same_every_day", "from": "08:00Z", "to": "18:00Z",
                                  "breaks": [{"from": "12:00Z", "to": "13:00Z"}]}],
                        "holidays": {"calendars": [calendar],
                                     "windows": [{"from": "10:00Z", "to": "16:00Z"}]}});
    let office = d.create_script(&script("office", SIDEBAR, FACE, &[1], office)).await["id"]
        .as_i64()
        .expect("id");
    let all_day = json!({"days": [{"type": "same_every_day", "from": "00:00", "to": "23:59"}]});
    let always =
        d.create_script(&script("always", SIDEBAR, FACE, &[1], all_day.clone())).await["id"]
            .as_i64()
            .expect("id");
    let theirs = d.create_script(&script("B's", SIDEBAR, FACE, &[4], all_day.clone())).await["id"]
        .as_i64()
        .expect("id");
    let receiver = WebhookReceiver::start(Some("s3cret")).await;
    let mut hook = script("hook", WEBHOOK, FACE, &[1], all_day);
    hook["extra"] = json!({"url": receiver.url(), "secret": "s3cret"});
    let hook = d.create_script(&hook).await["id"].as_i64().expect("id");

    // Browsers ask for /favicon.ico on every page: an icon, not a 404.
    let icon =
        d.client().get(format!("{}/favicon.ico", d.base())).send().await.expect("GET /favicon.ico");
    assert_eq!(icon.status(), 200);
    let kind = icon.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    assert!(kind.starts_with("image/"), "{kind}");

    let c = driver.browser_with(&switches).await;
    c.goto(&format!("{}/", d.base())).await.expect("open the page");
    assert!(c.current_url().await.expect("url").as_str().starts_with(&d.base()));
    let shot = |c: &Client, name: &str| {
        let name = if https { format!("https-{name}") } else { name.to_owned() };
        let c = c.clone();
        async move { shot(&c, &name).await }
    };
    shot(&c, "01-sign-in").await;
    let token = wait_css(&c, "#token", 10).await;
    token.send_keys(&d.token).await.expect("type the token");
    click(&c, "#sign-in-form button[type=submit]").await;

    // The header says who is signed in and what the token may do.
    let login = wait_css(&c, "#who-login", 10).await;
    assert_eq!(login.text().await.expect("login"), "op@example.com");
    let who = c.find(Locator::Css("#who")).await.expect("who").text().await.expect("text");
    assert!(who.starts_with("Signed in as op@example.com (op@example.com)"), "{who}");
    let perms = c.find(Locator::Css("#who-permissions")).await.expect("permissions");
    assert!(perms.text().await.expect("text").contains("may: "), "{who}");
    let icon = c.find(Locator::Css("link[rel=icon]")).await.expect("an icon link");
    assert_eq!(attr(&icon, "href").await, "/favicon.ico");

    // The sections are a tablist: roles, aria-selected, arrow keys move the selection.
    let tabs = c
        .find_all(Locator::Css("[role=tablist] > [role=presentation] > [role=tab]"))
        .await
        .expect("tabs");
    assert_eq!(tabs.len(), 4);
    assert_eq!(attr(&tabs[0], "aria-selected").await, "true");
    tabs[0].send_keys("\u{e014}").await.expect("ArrowRight");
    let live_tab = c.find(Locator::Css("#tab-live")).await.expect("live tab");
    assert_eq!(attr(&live_tab, "aria-selected").await, "true");
    assert_eq!(attr(&tabs[0], "aria-selected").await, "false");
    let focused = c.execute("return document.activeElement.id;", vec![]).await.expect("focus");
    assert_eq!(focused, "tab-live");
    live_tab.send_keys("\u{e012}").await.expect("ArrowLeft");
    assert_eq!(attr(&tabs[0], "aria-selected").await, "true");
    let panel = c.find(Locator::Css("#panel-scripts")).await.expect("panel");
    assert_eq!(attr(&panel, "role").await, "tabpanel");
    assert_eq!(attr(&panel, "aria-labelledby").await, "tab-scripts");

    // Only the caller's scripts.
    wait_css(&c, &format!("#scripts tbody tr[data-script-id='{always}']"), 10).await;
    let rows = c.find_all(Locator::Css("#scripts tbody tr")).await.expect("rows");
    let mut ids = Vec::new();
    for r in rows {
        ids.push(attr(&r, "data-script-id").await);
    }
    assert_eq!(
        ids,
        [office.to_string(), always.to_string(), hook.to_string()],
        "B's script {theirs} must not show"
    );
    shot(&c, "02-scripts").await;

    // The title filter narrows the list (a query parameter of GET /scripts).
    type_into(&c, "#filters input[name=q]", "offi").await;
    click(&c, "#filters button[type=submit]").await;
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath("//p[@id='scripts-count'][starts-with(., '1 script ')]"))
        .await
        .expect("one script after filtering");

    // The week grid: hour labels down the side, a gridline per hour.
    click(&c, &format!("#scripts tbody tr[data-script-id='{office}'] button")).await;
    wait_css(&c, "#week-grid .day .seg", 10).await;
    let mut labels = Vec::new();
    for l in c.find_all(Locator::Css("#week-grid .axis .hour-label")).await.expect("labels") {
        labels.push(l.text().await.expect("label"));
    }
    let hours: Vec<String> = (0..=24).step_by(3).map(|h| format!("{h:02}:00")).collect();
    assert_eq!(labels, hours);

    // By default the times are the browser's (+05:00): the daemon's seven UTC days overlap
    // eight local ones, and the 12:00Z break is 17:00-18:00 there.
    let zone = c.find(Locator::Css("#week-zone")).await.expect("zone").text().await.expect("text");
    assert_eq!(zone, BROWSER_TZ);
    let days = c.find_all(Locator::Css("#week-grid .day")).await.expect("days");
    assert_eq!(days.len(), 8);
    assert_eq!(days[1].find_all(Locator::Css(".hour-line")).await.expect("lines").len(), 23);
    days[0]
        .find(Locator::Css(".seg.nodata"))
        .await
        .expect("local midnight to 05:00 is before the week");
    let gap = days[1].find(Locator::Css(".seg.brk")).await.expect("the break is drawn");
    let title = attr(&gap, "title").await;
    assert!(
        title.starts_with(&format!(
            "17:00–18:00 {BROWSER_TZ}: inactive, in break timetable.days.0.breaks.0"
        )),
        "{title}"
    );
    let read = gap.find(Locator::Css(".sr")).await.expect("text for screen readers");
    assert_eq!(read.prop("textContent").await.expect("text").unwrap_or_default(), title);
    shot(&c, "03-week-local").await;

    // Switched to the scripts' zone (the daemon's, UTC here): seven days, the break at 12:00,
    // a gap between two active stretches, every day.
    click(&c, "input[name=zone][value=script]").await;
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath("//strong[@id='week-zone'][.='UTC']"))
        .await
        .expect("the zone switches");
    let days = c.find_all(Locator::Css("#week-grid .day")).await.expect("days");
    assert_eq!(days.len(), 7);
    let segs = days[0].find_all(Locator::Css(".seg")).await.expect("segments");
    let mut shape = Vec::new();
    for s in &segs {
        shape.push((attr(s, "data-active").await, attr(s, "data-reason").await));
    }
    let shape: Vec<(&str, &str)> = shape.iter().map(|(a, r)| (a.as_str(), r.as_str())).collect();
    assert_eq!(
        shape,
        [
            ("false", "outside days"),
            ("true", "in window timetable.days.0"),
            ("false", "in break timetable.days.0.breaks.0"),
            ("true", "in window timetable.days.0"),
            ("false", "outside days"),
        ]
    );
    let gap = days[0].find(Locator::Css(".seg.brk")).await.expect("the break is drawn");
    assert_eq!(attr(&gap, "data-from").await[11..16].to_owned(), "12:00");
    assert!(attr(&gap, "title").await.starts_with("12:00–13:00 UTC: inactive"));
    let window = days[0].find(Locator::Css(".seg.on")).await.expect("a window");
    assert!(attr(&window, "title").await.starts_with("08:00–12:00 UTC: active, in window"));

    // The day the calendar marks (the week endpoint's `holiday` object) is a column of its
    // own colour with the holiday's name, drawn with the holiday hours.
    let marked = c.find_all(Locator::Css("#week-grid .day.holiday")).await.expect("holidays");
    assert_eq!(marked.len(), 1);
    assert_eq!(attr(&marked[0], "data-date").await, wednesday);
    assert_eq!(attr(&days[2], "data-date").await, wednesday);
    let label = marked[0].find(Locator::Css(".holiday-label")).await.expect("a label");
    assert_eq!(label.text().await.expect("text"), "Holiday: Founders' Day");
    assert_eq!(
        attr(&label, "title").await,
        format!("holiday calendar {calendar} \"Founders' Day\"")
    );
    let window = marked[0].find(Locator::Css(".seg.on")).await.expect("the holiday window");
    let title = attr(&window, "title").await;
    assert!(
        title
            .starts_with("10:00–16:00 UTC: active, in holiday window timetable.holidays.windows.0"),
        "{title}"
    );
    shot(&c, "03-week").await;

    // Live: an occurrence published now appears within 2 s.
    click(&c, "#tab-live").await;
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::XPath("//p[@id='live-state'][starts-with(., 'Connected')]"))
        .await
        .expect("the stream connects");
    let vms = TestClient::connect(d.mqtt_port, "vms-page").await;
    let published = Instant::now();
    vms.publish(
        "vms/analytics/events/7",
        json!({"id": "live-1", "event_id": FACE, "camera_id": 7,
               "occurred_at": chrono::Utc::now().to_rfc3339()})
        .to_string()
        .into_bytes(),
    )
    .await;
    wait_css(&c, "#live-list li[data-occurrence-id='live-1']", 10).await;
    let took = published.elapsed();
    eprintln!("live reaction shown {took:?} after its publish");
    assert!(took < Duration::from_secs(2), "shown after {took:?}");

    // Its webhook call shows up below the pushes, with its state, from the polled deliveries.
    let row = wait_css(&c, "#deliveries tbody tr[data-state='sent']", 20).await;
    let cells = row.find_all(Locator::Css("td")).await.expect("cells");
    assert_eq!(cells[1].text().await.expect("channel"), "webhook");
    assert!(cells[2].text().await.expect("script").starts_with(&format!("{hook} ")));
    assert_eq!(cells[4].text().await.expect("state"), "sent");
    shot(&c, "04-live").await;

    // Why: the explain form names the break.
    click(&c, "#tab-why").await;
    let form = c.find(Locator::Css("#explain-form")).await.expect("explain form");
    form.find(Locator::Css("select[name=event_id]"))
        .await
        .expect("event select")
        .select_by_value("1")
        .await
        .expect("event");
    type_into(&c, "#explain-form input[name=camera_id]", "7").await;
    // A datetime-local input takes its value through script (typing is locale-bound).
    c.execute(
        "document.querySelector('#explain-form input[name=occurred_at]').value = arguments[0];",
        vec![Value::from("2026-12-07T12:30:00")],
    )
    .await
    .expect("set the time");
    form.find(Locator::Css("button[type=submit]"))
        .await
        .expect("explain")
        .click()
        .await
        .expect("explain");
    let verdict = wait_css(&c, &format!("#explain-result li[data-script-id='{office}']"), 10).await;
    assert_eq!(attr(&verdict, "data-reason").await, "in break timetable.days.0.breaks.0");
    assert!(verdict.text().await.expect("text").contains("does not fire"));
    let other = wait_css(&c, &format!("#explain-result li[data-script-id='{always}']"), 10).await;
    assert_eq!(attr(&other, "data-reason").await, "active in window timetable.days.0");
    shot(&c, "05-why").await;

    // An occurrence lookup.
    type_into(&c, "#occurrence-form input[name=id]", "live-1").await;
    click(&c, "#occurrence-form button").await;
    wait_css(&c, "#occurrence-result tbody tr td", 10).await;
    // The first cell of each row is the script: `always` fired (and `office` too when the
    // test runs during its hours).
    let mut scripts = Vec::new();
    for cell in
        c.find_all(Locator::Css("#occurrence-result tbody tr td:first-child")).await.expect("cells")
    {
        scripts.push(cell.text().await.expect("text"));
    }
    assert!(scripts.contains(&always.to_string()), "{scripts:?}");
    assert!(
        scripts.iter().all(|s| [always, office, hook].iter().any(|id| *s == id.to_string())),
        "{scripts:?}"
    );
    shot(&c, "06-occurrence").await;

    // Health.
    click(&c, "#tab-health").await;
    wait_css(&c, "#health-components tbody tr", 10).await;
    let status =
        c.find(Locator::Css("#health-status")).await.expect("status").text().await.expect("text");
    assert!(status.starts_with("Status: "), "{status}");
    shot(&c, "07-health").await;

    // A phone's width: the page still fits (no horizontal scroll of the whole page).
    c.set_window_size(390, 844).await.expect("phone size");
    click(&c, "#tab-scripts").await;
    let overflow = c
        .execute(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            vec![],
        )
        .await
        .expect("measure");
    let wide = c
        .execute(
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1 && e.offsetParent !== null && !e.closest('.scroll, .grid')).slice(0, 8).map(e => e.tagName + '#' + e.id + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).join(', ');",
            vec![],
        )
        .await
        .expect("measure");
    assert!(
        overflow.as_i64().unwrap_or(0) <= 0,
        "the page scrolls sideways by {overflow} px on a phone: {wide}"
    );
    shot(&c, "08-phone").await;
    c.close().await.expect("close the browser");
}
