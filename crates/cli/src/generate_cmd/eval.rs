//! `tandem generate --eval`: the decoder teacher-forced on a held-out split,
//! and a sweep of (snap, novel) thresholds.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Result};
use serde_json::json;
use tandem_data::{Dataset, Split, Texts};
use tandem_decode::{
    Blend, Case, Decision, Decoder, Evaluation, Lane, Retriever, Summary, SweepRow,
};
use tandem_io::Overwrite;
use tandem_nn::Model;
use tandem_train::encode::{encode_examples, query_ids};
use tandem_train::report::{HLine, Plot, Series, PALETTE};

use super::GenerateArgs;

/// `tandem generate --eval`.
pub(super) fn run(
    args: &GenerateArgs,
    ds: &Dataset,
    model: &Model,
    decoder: &Decoder,
    retriever: &dyn Retriever,
    lane: &Lane,
    texts: Option<&Texts>,
) -> Result<()> {
    let bank = ds.bank();
    let split: Split = args
        .split
        .parse()
        .map_err(|e| anyhow::anyhow!("--split {}: {e}", args.split))?;
    if args.hit_k == 0 || args.hit_k > bank.rows() {
        bail!(
            "--hit-k {}: fix: use a k between 1 and the bank's {} rows",
            args.hit_k,
            bank.rows()
        );
    }
    for (flag, values) in [
        ("--sweep-snap", &args.sweep_snap),
        ("--sweep-novel", &args.sweep_novel),
    ] {
        if values.is_empty() || values.iter().any(|v| !(-1.0..=1.0).contains(v)) {
            bail!("{flag} {values:?}: fix: list cosines between -1 and 1, e.g. 0.85,0.90");
        }
    }
    let dedup = |v: &[f32]| {
        let mut v = v.to_vec();
        v.sort_by(f32::total_cmp);
        v.dedup();
        v
    };
    let (snaps, novels) = (dedup(&args.sweep_snap), dedup(&args.sweep_novel));
    let pairs = snaps
        .iter()
        .map(|&s| novels.iter().filter(|&&n| n < s).count())
        .sum::<usize>();
    if pairs == 0 {
        bail!("--sweep-snap {snaps:?} --sweep-novel {novels:?}: no pair with novel < snap; fix: list novel thresholds below some snap threshold");
    }
    check_out_dir(&args.out, args.force)?;
    let mut examples: Vec<_> = ds.examples(split).collect();
    if args.limit > 0 {
        examples.truncate(args.limit);
    }
    if examples.is_empty() {
        bail!(
            "{}: the {split} split has no examples; fix: evaluate another --split",
            ds.dir().display()
        );
    }
    let proposals = encode_examples(model, ds, &examples);
    let cases: Vec<Case> = examples
        .iter()
        .map(|e| Case {
            context: e.context.to_vec(),
            target: e.target,
        })
        .collect();
    let bar = tandem_io::progress(cases.len() as u64, "retrieve");
    let ev = Evaluation::new(
        bank,
        cases,
        &proposals,
        decoder,
        retriever,
        args.hit_k,
        &|| bar.inc(1),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", ds.dir().display()))?;
    bar.finish_and_clear();
    let outcomes = ev.outcomes(lane).map_err(anyhow::Error::msg)?;
    let summary = Summary::of(&outcomes);
    let always_snap = Lane {
        name: "always SNAP".into(),
        snap: -1.0,
        novel: -2.0,
        blend: Blend::Linear,
    };
    let retrieval = Summary::of(&ev.outcomes(&always_snap).map_err(anyhow::Error::msg)?);
    let pairs = args
        .sweep_snap
        .iter()
        .map(|&s| args.sweep_novel.iter().filter(|&&n| n < s).count())
        .sum::<usize>();
    let bar = tandem_io::progress(pairs as u64, "sweep");
    let sweep = ev
        .sweep(&args.sweep_snap, &args.sweep_novel, lane.blend, &|| {
            bar.inc(1)
        })
        .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();

    let overwrite = Overwrite::from_force(args.force);
    let ids = query_ids(ds, &examples);
    tandem_io::write_atomic(&args.out.join("eval.jsonl"), overwrite, |w| {
        for ((o, id), case) in outcomes.iter().zip(&ids).zip(ev.cases()) {
            let mut line = serde_json::to_value(o).map_err(std::io::Error::other)?;
            line["query"] = json!(id);
            line["target"] = json!(case.target);
            line["target_id"] = json!(bank.doc_id(case.target as usize));
            line["id"] = json!(o.row.map(|r| bank.doc_id(r as usize).into_owned()));
            if let (Some(t), Decision::Snap, Some(r)) = (texts, o.decision, o.row) {
                line["text"] = json!(t.get(r as usize).map_err(std::io::Error::other)?);
            }
            writeln!(w, "{line}")?;
        }
        Ok(())
    })?;
    let k = args.hit_k;
    let lane_table = lane_table(lane, &summary, &retrieval, k);
    let sweep_table = sweep_table(&sweep, k);
    tandem_io::write_atomic(&args.out.join("sweep.csv"), overwrite, |w| {
        writeln!(w, "snap,novel,snap_pct,blend_pct,novel_pct,cosine,hit@{k}")?;
        for r in &sweep {
            let s = &r.summary;
            writeln!(
                w,
                "{},{},{:.2},{:.2},{:.2},{:.6},{:.6}",
                r.snap,
                r.novel,
                s.percent(Decision::Snap),
                s.percent(Decision::Blend),
                s.percent(Decision::Novel),
                s.all.cos_true,
                s.all.hit
            )?;
        }
        Ok(())
    })?;
    let refs = [
        ("LVM alone", summary.lvm),
        ("retrieval alone", retrieval.all),
    ];
    for (file, title, y_label, value) in [
        (
            "sweep.svg",
            format!("Hit@{k} of the emitted vector by snap threshold"),
            format!("Hit@{k}"),
            (|t: &tandem_decode::Tally| t.hit) as fn(&tandem_decode::Tally) -> f64,
        ),
        (
            "sweep-cosine.svg",
            "Cosine of the emitted vector to the true next vector".to_string(),
            "mean cosine".to_string(),
            |t: &tandem_decode::Tally| t.cos_true,
        ),
    ] {
        let plot = sweep_plot(&sweep, &novels, title, y_label, value, &refs);
        tandem_io::write_atomic(&args.out.join(file), overwrite, |w| {
            w.write_all(plot.render().as_bytes())
        })?;
    }
    let settings = json!({
        "lvm": args.lvm,
        "data": args.data,
        "retriever": args.retriever,
        "split": split.name(),
        "examples": ev.len(),
        "lane": lane,
        "k": args.k,
        "budget_ms": args.budget_ms,
        "hit_k": k,
        "sweep_snap": snaps,
        "sweep_novel": novels,
    });
    let metrics = json!({
        "settings": settings,
        "lane": summary,
        "lvm_alone": summary.lvm,
        "retrieval_alone": retrieval.all,
        "sweep": sweep,
    });
    tandem_io::write_atomic(&args.out.join("eval.json"), overwrite, |w| {
        writeln!(w, "{metrics:#}")
    })?;
    let mut md = format!(
        "# tandem generate --eval\n\n{} examples of the {} split of `{}`, LVM `{}`, candidates from {}.\n\n## Lane {}\n\n{lane_table}\n## Threshold sweep\n\n![Hit@{k}](sweep.svg)\n![cosine](sweep-cosine.svg)\n\n{sweep_table}",
        ev.len(),
        split.name(),
        args.data.display(),
        args.lvm.display(),
        args.retriever.as_ref().map_or("the bank searched with the proposal".to_string(), |r| format!("the retriever `{}`", r.display())),
        lane.name,
    );
    let _ = writeln!(md, "\n## Settings\n\n```json\n{settings:#}\n```");
    tandem_io::write_atomic(&args.out.join("summary.md"), overwrite, |w| {
        w.write_all(md.as_bytes())
    })?;
    print!("{lane_table}\n{sweep_table}");
    println!("report: {}", args.out.join("summary.md").display());
    Ok(())
}

/// Refuses a non-empty output directory unless `force`, then creates it.
fn check_out_dir(out: &Path, force: bool) -> Result<()> {
    if out.is_file() {
        bail!(
            "{}: is a file; fix: with --eval, --out is a directory",
            out.display()
        );
    }
    let used = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if used && !force {
        bail!(
            "{}: already holds files; fix: pass --force to overwrite the evaluation there or choose another --out",
            out.display()
        );
    }
    std::fs::create_dir_all(out).map_err(|e| {
        anyhow::anyhow!(
            "{}: cannot create ({e}); fix: {}",
            out.display(),
            tandem_io::io_fix(&e)
        )
    })
}

/// The lane's decisions and what each path scores, beside the two pure paths.
fn lane_table(lane: &Lane, s: &Summary, retrieval: &Summary, k: usize) -> String {
    let mut t = format!(
        "| path | examples | share % | cosine to true next | Hit@{k} |\n|---|---:|---:|---:|---:|\n"
    );
    let mut row = |label: &str, n: usize, share: f64, cos: f64, hit: f64| {
        let _ = writeln!(t, "| {label} | {n} | {share:.1} | {cos:.4} | {hit:.4} |");
    };
    for (d, tally) in [
        (Decision::Snap, s.snap),
        (Decision::Blend, s.blend),
        (Decision::Novel, s.novel),
    ] {
        let label = match d {
            Decision::Novel if s.fallbacks > 0 => format!("NOVEL ({} fallbacks)", s.fallbacks),
            _ => format!("{d:?}").to_uppercase(),
        };
        row(&label, tally.n, s.percent(d), tally.cos_true, tally.hit);
    }
    row(
        &format!("decoder, lane {} ({}/{})", lane.name, lane.snap, lane.novel),
        s.all.n,
        100.0,
        s.all.cos_true,
        s.all.hit,
    );
    row(
        "LVM alone (always NOVEL)",
        s.lvm.n,
        100.0,
        s.lvm.cos_true,
        s.lvm.hit,
    );
    row(
        "retrieval alone (always SNAP)",
        retrieval.all.n,
        100.0,
        retrieval.all.cos_true,
        retrieval.all.hit,
    );
    t
}

/// The sweep as a Markdown table.
fn sweep_table(sweep: &[SweepRow], k: usize) -> String {
    let mut t = format!(
        "| snap | novel | SNAP % | BLEND % | NOVEL % | cosine | Hit@{k} |\n|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in sweep {
        let s = &r.summary;
        let _ = writeln!(
            t,
            "| {:.2} | {:.2} | {:.1} | {:.1} | {:.1} | {:.4} | {:.4} |",
            r.snap,
            r.novel,
            s.percent(Decision::Snap),
            s.percent(Decision::Blend),
            s.percent(Decision::Novel),
            s.all.cos_true,
            s.all.hit
        );
    }
    t
}

/// `value` of each sweep row against its snap threshold, one line per novel
/// threshold, with the two pure paths as reference lines.
fn sweep_plot(
    sweep: &[SweepRow],
    novels: &[f32],
    title: String,
    y_label: String,
    value: fn(&tandem_decode::Tally) -> f64,
    refs: &[(&str, tandem_decode::Tally)],
) -> Plot {
    let series = novels
        .iter()
        .enumerate()
        .filter_map(|(i, &n)| {
            let points: Vec<(f64, f64)> = sweep
                .iter()
                .filter(|r| r.novel == n)
                .map(|r| (f64::from(r.snap), value(&r.summary.all)))
                .collect();
            (!points.is_empty()).then(|| {
                Series::line(
                    &format!("novel {n:.2}"),
                    PALETTE[i % PALETTE.len()],
                    points,
                    2.0,
                )
            })
        })
        .collect();
    let dashes = ["6 4", "2 3"];
    Plot {
        title,
        x_label: "snap threshold".into(),
        y_label,
        series,
        hlines: refs
            .iter()
            .enumerate()
            .map(|(i, (label, t))| HLine {
                label: (*label).to_string(),
                y: value(t),
                color: "#555555",
                dash: dashes[i % dashes.len()],
            })
            .collect(),
    }
}
