//! The run report from a synthetic `metrics.jsonl`: tables hold the right
//! numbers, plots are well-formed SVG with one point per record, malformed
//! lines are named by file and line, and nothing is written on error.

use std::fs;
use std::path::Path;

use tandem_train::report::write_report;

/// A run of 50 train records (steps 10..=500, one NaN loss written as null),
/// five validations (best recall@10 at step 400), baselines, a test record,
/// an event, an unknown kind and unknown keys.
fn metrics() -> String {
    let mut lines = Vec::new();
    lines.push(r#"{"kind":"baseline","split":"val","query":"mean","recall@10":0.5614,"mrr@10":0.2833,"recall@1":0.1631}"#.to_string());
    lines.push(r#"{"kind":"baseline","split":"val","query":"last","recall@10":0.4698,"mrr@10":0.2558,"recall@1":0.1627}"#.to_string());
    lines.push(
        r#"{"kind":"baseline","split":"test","query":"mean","recall@10":0.55,"mrr@10":0.28}"#
            .to_string(),
    );
    for i in 1..=50u64 {
        let step = i * 10;
        let loss = if i == 25 {
            "null".to_string()
        } else {
            format!("{}", 3.0 / (1.0 + i as f64 / 10.0))
        };
        lines.push(format!(
            r#"{{"kind":"train","step":{step},"epoch":{},"loss":{loss},"lr":{},"steps_per_s":20.0,"rss_bytes":{},"band_fill":0.8,"mine_hidden":0.9,"mine_s":{},"mine_cached":{},"mine_cache_mb":{},"future_key":[1,2]}}"#,
            step / 250,
            5e-5 * (1.0 - i as f64 / 60.0),
            (1u64 << 30) + i * 1000,
            1.5 * i as f64,
            (i as f64 / 50.0).min(0.5),
            i as f64 * 4.0,
        ));
        if step % 100 == 0 {
            let r10 = [0.52, 0.58, 0.60, 0.63, 0.62][(step / 100 - 1) as usize];
            lines.push(format!(
                r#"{{"kind":"val","step":{step},"epoch":{},"recall@1":0.2,"recall@10":{r10},"mrr@10":{},"ndcg@10":null}}"#,
                step / 250,
                r10 / 2.0
            ));
        }
        if step == 250 {
            lines.push(r#"{"kind":"event","step":250,"message":"epoch 1 <started>"}"#.into());
            lines.push(String::new());
            lines.push(r#"{"kind":"gpu","util":0.5}"#.into());
        }
    }
    lines.push(
        r#"{"kind":"test","recall@10":0.6012,"mrr@10":0.3101,"recall@1":0.21,"elapsed_s":1234.5}"#
            .into(),
    );
    lines.join("\n") + "\n"
}

/// Check that `svg` is well-formed as XML tags go: every tag closed, in
/// order, quotes balanced, one `<svg>` root. Returns the tags seen.
fn tags(svg: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = svg;
    while let Some(open) = rest.find('<') {
        let close = rest[open..].find('>').expect("unclosed '<'") + open;
        let tag = &rest[open + 1..close];
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "unbalanced quotes in <{tag}>"
        );
        assert!(!tag.contains('<'), "'<' inside a tag: <{tag}>");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
        } else {
            let name = tag
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches('/')
                .to_string();
            if stack.is_empty() {
                assert!(
                    seen.is_empty() && name == "svg",
                    "one <svg> root, got <{name}>"
                );
            }
            if !tag.ends_with('/') {
                stack.push(name.clone());
            }
            seen.push(tag.to_string());
        }
        let text_end = rest[close + 1..]
            .find('<')
            .map_or(rest.len(), |i| i + close + 1);
        let text = &rest[close + 1..text_end];
        assert!(!text.contains('>'), "raw '>' in text {text:?}");
        for (at, _) in text.match_indices('&') {
            assert!(
                ["&lt;", "&gt;", "&amp;", "&quot;"]
                    .iter()
                    .any(|e| text[at..].starts_with(e)),
                "bare '&' in text {text:?}"
            );
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed tags {stack:?}");
    assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
    seen
}

/// Point counts of the polylines of `svg` stroked `color` (`#RRGGBB`).
fn polylines(svg: &str, color: &str) -> Vec<usize> {
    let stroke = format!("stroke=\"{color}\"");
    tags(svg)
        .iter()
        .filter(|t| t.starts_with("polyline ") && t.contains(&stroke))
        .map(|t| {
            let pts = t
                .split("points=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            pts.split_whitespace()
                .inspect(|p| {
                    let (x, y) = p.split_once(',').unwrap();
                    assert!(
                        x.parse::<f64>().unwrap().is_finite()
                            && y.parse::<f64>().unwrap().is_finite()
                    );
                })
                .count()
        })
        .collect()
}

/// The trimmed texts of the <text> elements of `svg`.
fn texts(svg: &str) -> Vec<&str> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim()))
        .collect()
}

const BLUE: &str = "#1F77B4";
const ORANGE: &str = "#FF7F0E";
const GREEN: &str = "#2CA02C";

fn run_with(text: &str) -> tempfile::TempDir {
    let run = tempfile::tempdir().unwrap();
    fs::write(run.path().join("metrics.jsonl"), text).unwrap();
    run
}

/// The table row starting with `| {first} |`.
fn row<'a>(md: &'a str, first: &str, section: &str) -> &'a str {
    let sec = md
        .split(&format!("## {section}"))
        .nth(1)
        .unwrap_or_else(|| panic!("no section {section}:\n{md}"));
    sec.lines()
        .find(|l| l.starts_with(&format!("| {first} |")))
        .unwrap_or_else(|| panic!("no row {first} in {section}:\n{md}"))
}

#[test]
fn report_tables_hold_the_numbers() {
    let run = run_with(&metrics());
    let out = write_report(run.path(), "scifact GRU").unwrap();
    assert_eq!(out, run.path().join("report.md"));
    let md = fs::read_to_string(&out).unwrap();
    assert!(md.starts_with("# scifact GRU\n"), "{md}");
    assert!(
        md.contains("| measure | final | best | best step | mean baseline | last baseline |"),
        "{md}"
    );
    assert_eq!(
        row(&md, "recall@10", "Validation"),
        "| recall@10 | 0.6200 | 0.6300 | 400 | 0.5614 | 0.4698 |"
    );
    assert_eq!(
        row(&md, "mrr@10", "Validation"),
        "| mrr@10 | 0.3100 | 0.3150 | 400 | 0.2833 | 0.2558 |"
    );
    assert_eq!(
        row(&md, "recall@1", "Validation"),
        "| recall@1 | 0.2000 | 0.2000 | 100 | 0.1631 | 0.1627 |"
    );
    // ndcg@10 was null everywhere: no row.
    assert!(!md.contains("ndcg"), "{md}");
    assert!(md.contains("5 evaluations; final at step 500."));
    assert_eq!(
        row(&md, "recall@10", "Test"),
        "| recall@10 | 0.6012 | 0.5500 |"
    );
    assert_eq!(row(&md, "recall@1", "Test"), "| recall@1 | 0.2100 | - |");
    assert_eq!(
        row(&md, "optimizer steps", "Training"),
        "| optimizer steps | 500 |"
    );
    assert_eq!(
        row(&md, "epochs started", "Training"),
        "| epochs started | 3 |"
    );
    assert_eq!(row(&md, "time", "Training"), "| time | 20 min 35 s |");
    let final_loss = 3.0 / 6.0;
    assert!(row(&md, "final loss (smoothed)", "Training")
        .starts_with(&format!("| final loss (smoothed) | {final_loss:.4} (")));
    assert_eq!(
        row(&md, "records without a finite loss", "Training"),
        "| records without a finite loss | 1 |"
    );
    assert_eq!(
        row(
            &md,
            "steps/s while training (median of the logged windows)",
            "Training"
        ),
        "| steps/s while training (median of the logged windows) | 20.0 |"
    );
    // 500 steps in 1234.5 s.
    assert_eq!(
        row(
            &md,
            "steps/s overall (with validation and checkpoints)",
            "Training"
        ),
        "| steps/s overall (with validation and checkpoints) | 0.4 |"
    );
    assert_eq!(row(&md, "peak RSS", "Training"), "| peak RSS | 1.00 GiB |");
    assert_eq!(
        row(&md, "mean band fill", "Training"),
        "| mean band fill | 0.800 |"
    );
    // The last record's cumulative search time (75 s), cache share and size.
    assert_eq!(
        row(&md, "time searching for negatives", "Training"),
        "| time searching for negatives | 1 min 15 s |"
    );
    assert_eq!(
        row(
            &md,
            "mining cache (train examples mined, memory)",
            "Training"
        ),
        "| mining cache (train examples mined, memory) | 50.0%, 190.73 MiB |"
    );
    assert!(md.contains("- step 250: epoch 1 <started>"), "{md}");
    for svg in ["loss.svg", "lr.svg", "recall.svg"] {
        assert!(md.contains(&format!("]({svg})")), "{svg} linked:\n{md}");
    }
}

#[test]
fn plots_are_well_formed_with_a_point_per_record() {
    let run = run_with(&metrics());
    write_report(run.path(), "t").unwrap();
    let loss = fs::read_to_string(run.path().join("loss.svg")).unwrap();
    assert_eq!(
        (polylines(&loss, BLUE), polylines(&loss, ORANGE)),
        (vec![49], vec![49]),
        "loss and its smoothed line (the null loss left out)"
    );
    let t = texts(&loss);
    assert!(
        t.contains(&"Training loss") && t.contains(&"optimizer step"),
        "{t:?}"
    );
    let lr = fs::read_to_string(run.path().join("lr.svg")).unwrap();
    assert_eq!(polylines(&lr, GREEN), [50]);
    assert!(
        texts(&lr).iter().any(|t| t.ends_with("e-5")),
        "lr ticks in scientific notation"
    );
    let recall = fs::read_to_string(run.path().join("recall.svg")).unwrap();
    // The validations, then two dashed baselines each: two-point dashes.
    for color in [BLUE, ORANGE] {
        let lines = polylines(&recall, color);
        assert_eq!(lines[0], 5, "{color}: {lines:?}");
        assert!(
            lines.len() > 3 && lines[1..].iter().all(|n| *n == 2),
            "{color}: {lines:?}"
        );
    }
    let t = texts(&recall);
    for label in [
        "R@10, mean baseline",
        "R@10, last baseline",
        "MRR@10, mean baseline",
        "MRR@10, last baseline",
    ] {
        assert!(t.contains(&label), "{label} in the legend: {t:?}");
    }
    // Regenerating replaces the files.
    write_report(run.path(), "again").unwrap();
    assert!(fs::read_to_string(run.path().join("report.md"))
        .unwrap()
        .starts_with("# again\n"));
}

#[test]
fn time_is_estimated_from_speed_without_elapsed() {
    let run = run_with(
        "{\"kind\":\"train\",\"step\":100,\"loss\":1.0,\"steps_per_s\":10.0}\n{\"kind\":\"train\",\"step\":300,\"loss\":0.5,\"steps_per_s\":5.0}\n",
    );
    let md = fs::read_to_string(write_report(run.path(), "t").unwrap()).unwrap();
    assert_eq!(
        row(&md, "time (from steps/s)", "Training"),
        "| time (from steps/s) | about 50 s |"
    );
    assert!(
        !md.contains("## Validation") && !md.contains("## Test"),
        "{md}"
    );
    assert!(!run.path().join("recall.svg").exists());
    assert!(!run.path().join("lr.svg").exists());
    let loss = fs::read_to_string(run.path().join("loss.svg")).unwrap();
    assert_eq!(
        (polylines(&loss, BLUE), polylines(&loss, ORANGE)),
        (vec![2], vec![2])
    );
}

#[test]
fn malformed_lines_name_the_file_and_line_and_write_nothing() {
    let good = r#"{"kind":"train","step":1,"loss":1.0}"#;
    for (bad, needle) in [
        (r#"{"kind":"train","step":2,"loss":1.0"#, "not valid JSON"),
        ("[1,2]", "not an object"),
        (r#"{"step":2}"#, "has no \"kind\""),
        (
            r#"{"kind":"train","loss":1.0}"#,
            "train record has no \"step\"",
        ),
        (
            r#"{"kind":"train","step":-3,"loss":1.0}"#,
            "not a non-negative integer",
        ),
        (
            r#"{"kind":"train","step":2,"loss":"high"}"#,
            "\"loss\" is \"high\", not a number",
        ),
        (
            r#"{"kind":"val","recall@10":0.5}"#,
            "val record has no \"step\"",
        ),
        (
            r#"{"kind":"baseline","split":"val","recall@10":0.5}"#,
            "baseline record has no \"query\"",
        ),
        (
            r#"{"kind":"event","step":3}"#,
            "event record has no \"message\"",
        ),
    ] {
        let run = run_with(&format!("{good}\n\n{bad}\n{good}\n"));
        let e = write_report(run.path(), "t").unwrap_err().to_string();
        let file = run.path().join("metrics.jsonl");
        assert!(e.starts_with(&format!("{}:3: ", file.display())), "{e}");
        assert!(e.contains(needle), "{bad}: {e}");
        assert!(e.contains("; fix: "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert_eq!(
            fs::read_dir(run.path()).unwrap().count(),
            1,
            "only metrics.jsonl: {e}"
        );
    }
}

#[test]
fn missing_or_empty_metrics_are_errors() {
    let run = tempfile::tempdir().unwrap();
    let e = write_report(run.path(), "t").unwrap_err().to_string();
    assert!(
        e.contains("metrics.jsonl") && e.contains("fix: check the path"),
        "{e}"
    );
    let run = run_with("{\"kind\":\"event\",\"message\":\"started\"}\n");
    let e = write_report(run.path(), "t").unwrap_err().to_string();
    assert!(e.contains("nothing to report"), "{e}");
    assert!(!Path::new(&run.path().join("report.md")).exists());
}
