//! The HTML dashboard (`report --html`, `report --publish`, serve's `/dashboard/`) over a
//! history made by the real binary on the local store: three pipelines — one healthy
//! with a restore drill, one with a mismatch (a corrupted pack found by a full verify), a
//! failed run and a failed drill, one stale (its only snapshot unverified). The pages
//! must be well-formed, every chart must have the points the history implies, the
//! overview's figures must equal `status --json`, and headless Chromium must load the
//! overview and a pipeline page without console errors and screenshot them.
//!
//! The Chromium test skips with a notice when `chromium` is not installed, unless
//! `BLOBPIPE_REQUIRE_SERVICES=1` (then it fails). The pages have no script, so any console
//! message at all (an uncaught error, a Content-Security-Policy refusal) fails it.

mod common;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use common::*;

fn bp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blobpipe"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> &Output {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout {}\nstderr {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn js(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

struct History {
    t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
}

fn walk(d: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "zst" || x == "gz") {
            out.push(p);
        }
    }
}

/// alpha: 3 ok runs (one file changed each time), 1 ok drill, RPO 1h.
/// beta: 2 ok runs, packs corrupted, a full verify finding mismatches, a failed run
///       (source gone), a failed drill, RPO 1h.
/// gamma: 1 run without verification (no verified snapshot: stale), RPO 1h.
fn history() -> History {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let dir = t.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("file://{}", store.display());
    let extra = "[compression]\nframe_size = \"64KiB\"\n[upload]\nblock_size = \"128KiB\"\npack_size = \"1MiB\"\n[freshness]\nrpo = \"1h\"\n";
    let mut files = BTreeMap::new();
    for name in ["alpha", "beta", "gamma"] {
        let src = t.path().join(format!("src-{name}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a.bin"), noise(300_000, 1)).unwrap();
        std::fs::write(src.join("b.txt"), b"hello\n".repeat(1000)).unwrap();
        files.insert(
            name,
            (src.clone(), write_pipeline(&dir, name, &src, &url, extra)),
        );
    }
    let scratch = t.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();

    let (src, alpha) = &files["alpha"];
    for i in 0..3u64 {
        std::fs::write(src.join(format!("new-{i}.bin")), noise(50_000, 10 + i)).unwrap();
        ok(&bp(&["--quiet", "backup", s(alpha)]));
    }
    ok(&bp(&[
        "--json",
        "drill",
        s(alpha),
        "--scratch-dir",
        s(&scratch),
    ]));

    let (src, beta) = &files["beta"];
    ok(&bp(&["--quiet", "backup", s(beta)]));
    std::fs::write(src.join("c.bin"), noise(200_000, 99)).unwrap();
    ok(&bp(&["--quiet", "backup", s(beta)]));
    let mut packs = vec![];
    walk(&store.join("backups/beta/packs"), &mut packs);
    assert!(!packs.is_empty());
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x5a;
        std::fs::write(p, b).unwrap();
    }
    let o = bp(&["--json", "verify", s(beta), "--full"]);
    assert_eq!(o.status.code(), Some(3), "a full verify finds the mismatch");
    std::fs::remove_dir_all(src).unwrap();
    let o = bp(&["--json", "backup", s(beta)]);
    assert!(!o.status.success(), "the source is gone: the run fails");
    let o = bp(&["--json", "drill", s(beta), "--scratch-dir", s(&scratch)]);
    assert!(!o.status.success(), "the drill of corrupted packs fails");

    let (_, gamma) = &files["gamma"];
    ok(&bp(&["--quiet", "backup", s(gamma), "--no-verify"]));
    History { t, dir, store }
}

// --- a tiny well-formedness check --------------------------------------------------

/// Checks that `html` is well-formed XML after its doctype: tags nest and close, every
/// attribute is quoted, every `&` starts an entity. Returns the element names seen.
fn well_formed(html: &str) -> Vec<String> {
    let body = html
        .strip_prefix("<!DOCTYPE html>")
        .expect("starts with the HTML5 doctype");
    let b = body.as_bytes();
    let mut stack: Vec<String> = vec![];
    let mut seen = vec![];
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'<' => {
                let end = body[i..].find('>').map(|k| i + k).expect("unclosed tag");
                let tag = &body[i + 1..end];
                assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
                if let Some(name) = tag.strip_prefix('/') {
                    let open = stack
                        .pop()
                        .unwrap_or_else(|| panic!("</{name}> closes nothing"));
                    assert_eq!(open, name.trim(), "</{name}> closes <{open}>");
                } else {
                    let self_closing = tag.ends_with('/');
                    let tag = tag.trim_end_matches('/');
                    let name: String = tag
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect();
                    assert!(!name.is_empty(), "bad tag <{tag}>");
                    check_attrs(&tag[name.len()..], &name);
                    seen.push(name.clone());
                    if !self_closing {
                        if name == "style" {
                            // Raw text up to </style>.
                            let close = body[end..].find("</style>").expect("</style>") + end;
                            assert!(!body[end + 1..close].contains('<'));
                            i = close + "</style>".len();
                            continue;
                        }
                        stack.push(name);
                    }
                }
                i = end + 1;
            }
            b'&' => {
                let rest = &body[i + 1..];
                let semi = rest.find(';').expect("'&' without ';'");
                let ent = &rest[..semi];
                assert!(
                    matches!(ent, "amp" | "lt" | "gt" | "quot" | "#39")
                        || (ent.starts_with('#') && ent[1..].chars().all(|c| c.is_ascii_digit())),
                    "bad entity &{ent};"
                );
                i += 1;
            }
            _ => i += 1,
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    seen
}

fn check_attrs(mut a: &str, tag: &str) {
    loop {
        a = a.trim_start();
        if a.is_empty() {
            return;
        }
        let eq = a
            .find('=')
            .unwrap_or_else(|| panic!("attribute without value in <{tag}{a}>"));
        let name = &a[..eq];
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
            "bad attribute name {name:?} in <{tag}>"
        );
        let rest = &a[eq + 1..];
        assert!(
            rest.starts_with('"'),
            "unquoted attribute {name} in <{tag}>"
        );
        let close = rest[1..].find('"').expect("unterminated attribute") + 1;
        a = &rest[close + 1..];
    }
}

// --- reading figures back ------------------------------------------------------------

/// `data-v` of every `data-k="key"` inside the overview row of `pipeline`.
fn row_values(index: &str, pipeline: &str) -> BTreeMap<String, String> {
    let start = index
        .find(&format!("<tr data-pipeline=\"{pipeline}\">"))
        .unwrap_or_else(|| panic!("no row for {pipeline}"));
    let end = index[start..].find("</tr>").unwrap() + start;
    attrs_kv(&index[start..end])
}

fn attrs_kv(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text;
    while let Some(i) = rest.find("data-k=\"") {
        rest = &rest[i + 8..];
        let k = &rest[..rest.find('"').unwrap()];
        let vi = rest.find("data-v=\"").unwrap() + 8;
        let v = &rest[vi..vi + rest[vi..].find('"').unwrap()];
        out.insert(k.to_string(), v.to_string());
    }
    out
}

/// `data-points` of the chart `<svg id="id">`, and the marks drawn inside it.
fn chart(page: &str, id: &str) -> (usize, usize) {
    let start = page
        .find(&format!("<svg id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id}"));
    let end = page[start..].find("</svg>").unwrap() + start;
    let svg = &page[start..end];
    let dp = svg.find("data-points=\"").unwrap() + 13;
    let n: usize = svg[dp..dp + svg[dp..].find('"').unwrap()].parse().unwrap();
    let marks =
        svg.matches("<circle class=\"pt\"").count() + svg.matches("<rect class=\"bar\"").count();
    (n, marks)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn report_pages_parse_charts_count_and_figures_equal_status() {
    let h = history();
    let out = h.t.path().join("site");
    let o = bp(&[
        "--json",
        "report",
        s(&h.dir),
        "--html",
        s(&out),
        "--points",
        "40",
    ]);
    ok(&o);
    let w = js(&o);
    assert_eq!(w["written"][0]["pipelines"], 3);
    assert_eq!(w["written"][0]["stale"], 1, "gamma is stale");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["index.html", "p-alpha.html", "p-beta.html", "p-gamma.html"]
    );

    let index = read(&out.join("index.html"));
    for n in &names {
        let page = read(&out.join(n));
        let tags = well_formed(&page);
        assert!(!tags.iter().any(|t| t == "script"), "{n} has a script");
        for external in ["http://", "https://", "src=\"", "<link"] {
            let hits: Vec<_> = page
                .match_indices(external)
                .map(|(i, _)| &page[i.saturating_sub(40)..(i + 60).min(page.len())])
                .collect();
            // The SVG namespace is the only URL allowed.
            assert!(
                hits.iter().all(|h| h.contains("www.w3.org/2000/svg")),
                "{n} loads something external: {hits:?}"
            );
        }
    }

    // Figures equal `status --json`.
    let st = js(&bp(&["--json", "status", s(&h.dir)]));
    for p in st["pipelines"].as_array().unwrap() {
        let name = p["pipeline"].as_str().unwrap();
        let row = row_values(&index, name);
        assert_eq!(
            row["snapshots"],
            p["snapshots"].to_string(),
            "{name} snapshots"
        );
        assert_eq!(
            row["newest_verified"],
            p["newest_verified"].as_str().unwrap_or(""),
            "{name} newest verified"
        );
        assert_eq!(
            row["within_rpo"],
            p["within_rpo"].to_string(),
            "{name} within RPO"
        );
        assert_eq!(
            row["last_run"],
            p["last_run"]["status"].as_str().unwrap_or(""),
            "{name} last run"
        );
        let mut total = 0;
        for (tier, v) in p["stored_by_tier"].as_object().unwrap() {
            assert_eq!(
                row[&format!("stored_{tier}")],
                v["bytes"].to_string(),
                "{name} {tier}"
            );
            total += v["bytes"].as_u64().unwrap();
        }
        assert!(total > 0);
        assert_eq!(row["stored"], total.to_string());
        assert_eq!(
            row["last_verify_mismatches"],
            if p["last_verify"].is_null() {
                String::new()
            } else {
                p["last_verify"]["mismatches"].to_string()
            },
            "{name} last verify"
        );
        assert_eq!(
            row["last_drill_ok"],
            if p["last_drill"].is_null() {
                String::new()
            } else {
                p["last_drill"]["ok"].to_string()
            },
            "{name} last drill"
        );
    }
    let by_name = |n: &str| -> serde_json::Value {
        st["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pipeline"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("alpha")["within_rpo"], true);
    assert_eq!(by_name("beta")["last_run"]["status"], "failed");
    assert!(
        by_name("beta")["last_verify"]["mismatches"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(by_name("beta")["last_drill"]["ok"], false);
    assert_eq!(by_name("gamma")["within_rpo"], false);
    assert_eq!(row_values(&index, "gamma")["within_rpo"], "false");
    assert!(index.contains("STALE"));

    // Every chart has the points the history implies.
    let alpha = read(&out.join("p-alpha.html"));
    for (id, want) in [
        ("bytes-added", 3),
        ("duration", 3),
        ("files", 3),
        ("verify", 3),
        ("drill-rto", 1),
        ("rpo", 40),
    ] {
        assert_eq!(chart(&alpha, id), (want, want), "alpha {id}");
    }
    // One day of uploads (two if the history straddled midnight UTC), one tier.
    let (tier_pts, marks) = chart(&alpha, "stored-by-tier");
    assert!(
        (1..=2).contains(&tier_pts) && marks == tier_pts,
        "{tier_pts}"
    );
    assert!(alpha.contains("Within the RPO <span data-k=\"rpo_share\" data-v=\"100.0\">"));
    let beta = read(&out.join("p-beta.html"));
    // The failed run has a bar (0 bytes) and a duration, but no file count.
    for (id, want) in [
        ("bytes-added", 3),
        ("duration", 3),
        ("files", 2),
        ("verify", 3),
        ("drill-rto", 1),
    ] {
        assert_eq!(chart(&beta, id), (want, want), "beta {id}");
    }
    // The failed run, the mismatch and the failed drill are red; the failure's error is listed.
    assert!(beta.contains("<td class=\"s-bad\">failed</td>"));
    assert!(beta.contains("MISMATCH") || beta.contains(">mismatch<"));
    assert!(beta.contains(">FAILED<"));
    let gamma = read(&out.join("p-gamma.html"));
    assert_eq!(chart(&gamma, "verify"), (0, 0));
    assert_eq!(
        chart(&gamma, "rpo"),
        (0, 0),
        "no verified snapshot: no age to draw"
    );
    assert!(
        gamma.contains("class=\"shade\""),
        "all of gamma's time is over the RPO"
    );
    assert_eq!(chart(&gamma, "duration"), (1, 1));

    // Grouping keeps charts bounded: with 2 points, alpha's 3 runs become 2 marks.
    let small = h.t.path().join("small");
    ok(&bp(&[
        "--json",
        "report",
        s(&h.dir),
        "--html",
        s(&small),
        "--points",
        "2",
    ]));
    let alpha2 = read(&small.join("p-alpha.html"));
    assert_eq!(chart(&alpha2, "duration"), (2, 2));
    assert_eq!(chart(&alpha2, "rpo"), (2, 2));
    assert!(
        alpha2.contains("2 runs "),
        "a grouped mark says how many runs it holds"
    );
}

#[test]
fn report_needs_a_destination_and_publish_goes_to_the_container() {
    let h = history_small();
    let o = bp(&["report", s(&h.dir)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--html"));
    // Publishing into the local store's account (a directory): $web beside the backups.
    let o = bp(&["--json", "report", s(&h.dir), "--publish"]);
    ok(&o);
    let web = h.store.join("$web");
    let idx = read(&web.join("index.html"));
    well_formed(&idx);
    assert!(idx.contains("data-pipeline=\"solo\""));
    assert!(web.join("p-solo.html").is_file());
    // A named container and prefix; a bad container name is a usage error.
    ok(&bp(&[
        "report",
        s(&h.dir),
        "--publish",
        "--container",
        "reports",
        "--prefix",
        "dash/",
    ]));
    assert!(h.store.join("reports/dash/index.html").is_file());
    let o = bp(&["report", s(&h.dir), "--publish", "--container", "Bad_Name"]);
    assert_eq!(o.status.code(), Some(2));
    // Republishing replaces the pages (the site is not create-only).
    ok(&bp(&["--quiet", "backup", s(&h.dir.join("solo.toml"))]));
    ok(&bp(&["report", s(&h.dir), "--publish"]));
    let idx2 = read(&web.join("index.html"));
    assert_eq!(row_values(&idx2, "solo")["snapshots"], "2");
}

fn history_small() -> History {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let dir = t.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"solo\n".repeat(100)).unwrap();
    let p = write_pipeline(
        &dir,
        "solo",
        &src,
        &format!("file://{}", store.display()),
        "",
    );
    ok(&bp(&["--quiet", "backup", s(&p)]));
    History { t, dir, store }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_dashboard_is_off_by_default_and_needs_easy_auth() {
    use blobpipe::pipeline::Pipeline;
    use blobpipe::serve::dashboard::Access;
    use blobpipe::serve::Server;
    blobpipe::support::http::ensure_tls_provider();
    let h = tokio::task::spawn_blocking(history_small).await.unwrap();
    let p = Pipeline::load(&h.dir.join("solo.toml")).unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let start = |access: Option<Access>| {
        let p = p.clone();
        async move {
            let cancel = blobpipe::support::cancel::Cancel::new();
            let mut server = Server::bind(
                "127.0.0.1:0".parse().unwrap(),
                vec![p],
                Arc::new(blobpipe::schedule::BackupRunner),
                cancel.clone(),
            )
            .await
            .unwrap();
            if let Some(a) = access {
                server = server.with_dashboard(a);
            }
            let base = format!("http://{}", server.local_addr().unwrap());
            let task = tokio::spawn(async move { server.run().await.unwrap() });
            (base, cancel, task)
        }
    };
    // Default: not served.
    let (base, cancel, task) = start(None).await;
    let r = client
        .get(format!("{base}/dashboard/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.text().await.unwrap().contains("--dashboard easy-auth"));
    cancel.cancel();
    task.await.unwrap();

    // Easy Auth: 401 without the principal header, the pages with it.
    let (base, cancel, task) = start(Some(Access::EasyAuth)).await;
    let r = client
        .get(format!("{base}/dashboard/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let get = |path: &str| {
        client
            .get(format!("{base}{path}"))
            .header(
                "X-MS-CLIENT-PRINCIPAL-ID",
                "00000000-0000-0000-0000-000000000001",
            )
            .header("X-MS-CLIENT-PRINCIPAL-NAME", "ops@example.com")
            .send()
    };
    let r = get("/dashboard").await.unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(r.headers()["location"], "/dashboard/");
    let r = get("/dashboard/").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    let idx = r.text().await.unwrap();
    well_formed(&idx);
    assert_eq!(row_values(&idx, "solo")["snapshots"], "1");
    let r = get("/dashboard/p-solo.html").await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let page = r.text().await.unwrap();
    assert_eq!(chart(&page, "duration"), (1, 1));
    assert_eq!(
        get("/dashboard/p-nope.html")
            .await
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    // Read-only: nothing but GET/HEAD reaches it.
    let r = client
        .post(format!("{base}/dashboard/"))
        .header("X-MS-CLIENT-PRINCIPAL-ID", "x")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status().as_u16(), 200);
    cancel.cancel();
    task.await.unwrap();
}

// --- headless Chromium ---------------------------------------------------------------

fn chromium() -> Option<PathBuf> {
    for c in ["chromium", "chromium-browser"] {
        if let Ok(o) = Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
        {
            if o.status.success() {
                let p = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if !p.is_empty() {
                    return Some(PathBuf::from(p));
                }
            }
        }
    }
    None
}

/// Run headless Chromium on `url`: (stderr log, dumped DOM); writes `shot` when given.
fn run_chromium(bin: &Path, profile: &Path, url: &str, shot: Option<&Path>) -> (String, String) {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,900",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    match shot {
        Some(p) => cmd.arg(format!("--screenshot={}", p.display())),
        None => cmd.arg("--dump-dom"),
    };
    let o = cmd.arg(url).output().unwrap();
    assert!(
        o.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    (
        String::from_utf8_lossy(&o.stderr).into_owned(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn chromium_loads_the_pages_without_console_errors() {
    let Some(bin) = chromium() else {
        if std::env::var("BLOBPIPE_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("chromium is not installed but BLOBPIPE_REQUIRE_SERVICES=1 (apt-get install chromium)");
        }
        eprintln!("SKIP chromium_loads_the_pages_without_console_errors: chromium is not installed (apt-get install chromium)");
        return;
    };
    let h = history();
    let out = h.t.path().join("site");
    ok(&bp(&["report", s(&h.dir), "--html", s(&out)]));
    let profile = h.t.path().join("chromium-profile");
    for page in ["index.html", "p-beta.html"] {
        let url = format!("file://{}", out.join(page).display());
        let shot = h.t.path().join(page.replace(".html", ".png"));
        let (log, _) = run_chromium(&bin, &profile, &url, Some(&shot));
        for bad in [
            "Uncaught",
            ":CONSOLE",
            "Refused to",
            "Content Security Policy",
        ] {
            assert!(
                !log.contains(bad),
                "{page}: {bad} in the browser log:\n{log}"
            );
        }
        let png = std::fs::read(&shot).unwrap();
        assert_eq!(
            &png[..8],
            b"\x89PNG\r\n\x1a\n",
            "{page}: screenshot is a PNG"
        );
        assert!(
            png.len() > 10_000,
            "{page}: screenshot of {} bytes is blank",
            png.len()
        );
        let (log, dom) = run_chromium(&bin, &profile, &url, None);
        assert!(
            !log.contains("Uncaught") && !log.contains(":CONSOLE"),
            "{log}"
        );
        // The browser built the charts from the page (SVG elements in its DOM).
        if page == "index.html" {
            assert!(dom.contains("data-pipeline=\"gamma\""), "{dom}");
        } else {
            assert_eq!(dom.matches("<svg ").count(), 7, "seven charts");
            assert!(dom.contains("id=\"rpo\""));
        }
        eprintln!("screenshot: {}", shot.display());
    }
    if let Ok(keep) = std::env::var("BLOBPIPE_DASHBOARD_SHOTS") {
        // For docs/img: copy the screenshots out of the temp dir.
        for f in ["index.png", "p-beta.png"] {
            std::fs::copy(h.t.path().join(f), Path::new(&keep).join(f)).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_azurite_static_website_container() {
    let Some(ep) = support::azurite() else { return };
    blobpipe::support::http::ensure_tls_provider();
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"azure\n".repeat(100)).unwrap();
    let dir = t.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    let container = support::unique_container("dash");
    let pf = write_pipeline(
        &dir,
        "cloud",
        &src,
        &support::azurite_connection_string(&ep),
        "",
    );
    // A connection string names no container: the file does.
    let text = std::fs::read_to_string(&pf).unwrap().replace(
        "[target]\n",
        &format!("[target]\ncontainer = \"{container}\"\n"),
    );
    std::fs::write(&pf, text).unwrap();
    let pf2 = pf.clone();
    tokio::task::spawn_blocking(move || ok(&bp(&["--quiet", "backup", s(&pf2)])).status)
        .await
        .unwrap();
    // $web (shared by every test on this Azurite): a unique prefix keeps runs apart.
    let prefix = support::unique_container("site");
    let (d, p2) = (dir.clone(), prefix.clone());
    let o = tokio::task::spawn_blocking(move || {
        bp(&["--json", "report", s(&d), "--publish", "--prefix", &p2])
    })
    .await
    .unwrap();
    ok(&o);
    let w = js(&o);
    assert!(
        w["written"][0]["location"]
            .as_str()
            .unwrap()
            .contains("container $web"),
        "{w}"
    );
    let p = blobpipe::pipeline::Pipeline::load(&pf).unwrap();
    let web = blobpipe::store::open_container(&p.target, &p.retry, "$web")
        .await
        .unwrap();
    let idx = web
        .get(&format!("{prefix}/index.html"), None)
        .await
        .unwrap();
    let idx = String::from_utf8(idx.to_vec()).unwrap();
    well_formed(&idx);
    assert_eq!(row_values(&idx, "cloud")["snapshots"], "1");
    assert!(web
        .head(&format!("{prefix}/p-cloud.html"))
        .await
        .unwrap()
        .is_some());
    // Served as HTML: HEAD the blob with an account SAS and read its Content-Type.
    let signer = blobpipe::store::azure::credential::AccountSasSigner::new(
        "devstoreaccount1",
        &blobpipe::support::secret::Secret::new(support::AZURITE_KEY),
        true,
    )
    .unwrap();
    let (sas, _) = signer.token(chrono::Utc::now(), std::time::Duration::from_secs(600));
    let r = reqwest::Client::new()
        .head(format!("{ep}/$web/{prefix}/index.html?{}", sas.expose()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    // Nothing of the site went into the backup container.
    let (_, backups) = open(&pf).await;
    let listed = backups.list("", None, 1000).await.unwrap();
    assert!(listed.items.iter().all(|i| !i.name.ends_with(".html")));
}
