//! The `--timings` report: one HTML page, like `cargo build --timings`, but laid out per worker.
//!
//! At the top, a summary table (start time, wall time, workers, thunks, phase totals, the caller's
//! own lines such as the engine and the estimated cost). Then the timeline: one row per worker (a
//! Lambda instance or a local slot), one bar per thunk it ran, placed and sized in proportion to time
//! on a fixed-width axis, each bar split into its three phases (fetching inputs, running rustc,
//! storing outputs), the critical path outlined in red. Last, the slowest thunks.
//!
//! The page is self-contained — inline CSS, inline markup, no script, no font, no image and no URL
//! at all — because it is read on build machines and in CI artifacts that often have no network, and
//! because a report must look the same in a year as on the day it was written.
//!
//! Class names are chosen so that each can be counted by its attribute text alone: `worker-row` and
//! `bar` are the only classes starting with those words (phase segments are `seg`), which is what the
//! tests here and `scripts/check-timeline` rely on.

use std::fmt::{self, Write as _};

/// A build's timeline: what ran where and when.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Heading, e.g. "ripgrep — lambda=8 + local=2".
    pub title: String,
    /// When forcing started, seconds since the Unix epoch (shown as a UTC date-time).
    pub started_unix_s: u64,
    /// Wall time of the whole force phase, in milliseconds.
    pub wall_ms: u64,
    /// One per worker (a Lambda instance or a local slot), in display order.
    pub workers: Vec<Worker>,
    /// Extra summary lines (key, value) shown in a table at the top, e.g. ("engine", "lambda=8"),
    /// ("estimated cost", "$0.0123").
    pub summary: Vec<(String, String)>,
}

/// One place thunks ran: a Lambda instance or a local slot.
#[derive(Debug, Clone, Default)]
pub struct Worker {
    /// e.g. "lambda 3f2a9c01" or "local 1".
    pub name: String,
    /// The thunks it ran, in any order.
    pub bars: Vec<Bar>,
}

/// One thunk run on a worker. Times are milliseconds from the start of forcing.
#[derive(Debug, Clone, Default)]
pub struct Bar {
    /// Short hash of the thunk (12 hex digits).
    pub thunk: String,
    /// The crate, e.g. "regex_automata".
    pub crate_name: String,
    /// What it built: "lib", "bin", "test", "build-script", "proc-macro", ….
    pub kind: String,
    /// When the worker began with it (the start of the fetch phase).
    pub start_ms: u64,
    /// The three phases, in order, laid end to end from start_ms: fetching inputs, running rustc, storing outputs.
    pub fetch_ms: u64,
    /// Time in rustc.
    pub run_ms: u64,
    /// Time storing the outputs.
    pub upload_ms: u64,
    /// Whether the bar is on the critical path (highlighted).
    pub critical: bool,
}

impl Bar {
    fn total_ms(&self) -> u64 {
        self.fetch_ms.saturating_add(self.run_ms).saturating_add(self.upload_ms)
    }

    fn end_ms(&self) -> u64 {
        self.start_ms.saturating_add(self.total_ms())
    }
}

/// Width of the time axis in CSS pixels; the whole force phase is scaled to it.
const CHART_WIDTH_PX: f64 = 1200.0;
/// Width of the worker-name column left of the axis.
const LABEL_WIDTH_PX: u32 = 150;
/// Bars narrower than this leave their crate name to the tooltip: a few letters and an ellipsis at least.
const MIN_NAMED_BAR_PX: f64 = 36.0;
/// Rows of the slowest-thunks table.
const SLOWEST_ROWS: usize = 20;
/// Aim for at most this many ticks on the time axis.
const MAX_TICKS: u64 = 12;

/// The whole report as one HTML document (inline CSS, no script or font or image from the network).
pub fn render(timeline: &Timeline) -> String {
    let mut html = String::with_capacity(8192 + 512 * thunk_count(timeline));
    write_report(&mut html, timeline).expect("formatting into a String does not fail");
    html
}

fn thunk_count(timeline: &Timeline) -> usize {
    timeline.workers.iter().map(|worker| worker.bars.len()).sum()
}

fn write_report(out: &mut String, timeline: &Timeline) -> fmt::Result {
    let title = if timeline.title.is_empty() { "cargo lambdabuild timings" } else { &timeline.title };
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    writeln!(out, "<title>{}</title>", Escaped(title))?;
    out.push_str(STYLE);
    out.push_str("</head>\n<body>\n");
    writeln!(out, "<h1>{}</h1>", Escaped(title))?;
    write_summary(out, timeline)?;
    out.push_str("<h2>Timeline</h2>\n");
    out.push_str(LEGEND);
    write_chart(out, timeline)?;
    out.push_str("<h2>Slowest thunks</h2>\n");
    write_slowest(out, timeline)?;
    out.push_str("</body>\n</html>\n");
    Ok(())
}

fn write_summary(out: &mut String, timeline: &Timeline) -> fmt::Result {
    let bars = || timeline.workers.iter().flat_map(|worker| &worker.bars);
    let phase_total = |phase: fn(&Bar) -> u64| bars().map(phase).fold(0u64, u64::saturating_add);
    let critical: Vec<&Bar> = bars().filter(|bar| bar.critical).collect();
    let critical_ms = critical.iter().map(|bar| bar.total_ms()).fold(0u64, u64::saturating_add);

    let mut rows: Vec<(&str, String)> = vec![
        ("started", utc_date_time(timeline.started_unix_s)),
        ("wall time", format!("{} s", seconds(timeline.wall_ms))),
        ("workers", timeline.workers.len().to_string()),
        ("thunks", thunk_count(timeline).to_string()),
        (
            "thunk time",
            format!(
                "fetch {} s · rustc {} s · store {} s",
                seconds(phase_total(|bar| bar.fetch_ms)),
                seconds(phase_total(|bar| bar.run_ms)),
                seconds(phase_total(|bar| bar.upload_ms)),
            ),
        ),
        ("critical path", format!("{} thunks, {} s", critical.len(), seconds(critical_ms))),
    ];
    rows.extend(timeline.summary.iter().map(|(key, value)| (key.as_str(), value.clone())));

    out.push_str("<table class=\"summary\">\n<tbody>\n");
    for (key, value) in rows {
        writeln!(out, "<tr><th>{}</th><td>{}</td></tr>", Escaped(key), Escaped(&value))?;
    }
    out.push_str("</tbody>\n</table>\n");
    Ok(())
}

const LEGEND: &str = "<div class=\"legend\">\
<span class=\"swatch seg-fetch\"></span>fetch inputs\
<span class=\"swatch seg-run\"></span>rustc\
<span class=\"swatch seg-upload\"></span>store outputs\
<span class=\"swatch swatch-critical\"></span>critical path\
</div>\n";

fn write_chart(out: &mut String, timeline: &Timeline) -> fmt::Result {
    // Bars reported past the wall time (clocks of different machines) still fit on the axis.
    let latest_end = timeline.workers.iter().flat_map(|worker| &worker.bars).map(Bar::end_ms).max().unwrap_or(0);
    let span_ms = timeline.wall_ms.max(latest_end).max(1);
    let px = |ms: u64| ms as f64 * CHART_WIDTH_PX / span_ms as f64;
    let step_ms = tick_step_ms(span_ms);
    let ticks = (0..=span_ms / step_ms).map(|index| index * step_ms);

    // The CSS reads the geometry from these properties, so the constants here are its only source.
    write!(out, "<div class=\"chart\" style=\"--label-width:{LABEL_WIDTH_PX}px;--chart-width:{CHART_WIDTH_PX}px\">")?;
    out.push_str("\n<div class=\"axis\">");
    for tick in ticks.clone() {
        write!(out, "<span class=\"tick\" style=\"left:{:.1}px\">{}</span>", px(tick), tick_label(tick, step_ms))?;
    }
    out.push_str("</div>\n<div class=\"rows\">\n<div class=\"grid\">");
    for tick in ticks {
        write!(out, "<span class=\"gridline\" style=\"left:{:.1}px\"></span>", px(tick))?;
    }
    out.push_str("</div>\n");
    if timeline.workers.is_empty() {
        out.push_str("<p class=\"empty\">No thunk was forced.</p>\n");
    }
    for worker in &timeline.workers {
        write_worker(out, worker, timeline.wall_ms, &px)?;
    }
    out.push_str("</div>\n</div>\n");
    Ok(())
}

fn write_worker(out: &mut String, worker: &Worker, wall_ms: u64, px: &impl Fn(u64) -> f64) -> fmt::Result {
    let busy_ms = worker.bars.iter().map(Bar::total_ms).fold(0u64, u64::saturating_add);
    let mut about = format!("{}: {} thunks, busy {} s", worker.name, worker.bars.len(), seconds(busy_ms));
    if wall_ms > 0 {
        write!(about, " ({:.0}% of the wall time)", busy_ms as f64 * 100.0 / wall_ms as f64)?;
    }
    writeln!(
        out,
        "<div class=\"worker-row\" data-worker=\"{}\">\n\
         <div class=\"worker-label\" title=\"{}\">{}</div>\n<div class=\"lanes\">",
        Escaped(&worker.name),
        Escaped(&about),
        Escaped(&worker.name),
    )?;
    for lane in lanes(&worker.bars) {
        out.push_str("<div class=\"lane\">");
        for bar in lane {
            write_bar(out, bar, &worker.name, px)?;
        }
        out.push_str("</div>\n");
    }
    out.push_str("</div>\n</div>\n");
    Ok(())
}

/// Splits a worker's bars into lanes of bars that do not overlap, first fit by start time. A worker
/// runs one thunk at a time, so this is normally one lane; but overlapping bars (e.g. from timings
/// measured on different clocks) stay visible instead of hiding each other.
fn lanes(bars: &[Bar]) -> Vec<Vec<&Bar>> {
    let mut by_start: Vec<&Bar> = bars.iter().collect();
    by_start.sort_by_key(|bar| (bar.start_ms, bar.end_ms()));
    let mut lanes: Vec<(u64, Vec<&Bar>)> = Vec::new();
    for bar in by_start {
        match lanes.iter_mut().find(|(free_from, _)| *free_from <= bar.start_ms) {
            Some((free_from, lane)) => {
                *free_from = bar.end_ms();
                lane.push(bar);
            }
            None => lanes.push((bar.end_ms(), vec![bar])),
        }
    }
    if lanes.is_empty() {
        // An idle worker still gets its row.
        lanes.push((0, Vec::new()));
    }
    lanes.into_iter().map(|(_, lane)| lane).collect()
}

fn write_bar(out: &mut String, bar: &Bar, worker: &str, px: &impl Fn(u64) -> f64) -> fmt::Result {
    let total_ms = bar.total_ms();
    let width_px = px(total_ms).max(1.0);
    let mut tooltip = format!(
        "{} ({})\nthunk {} on {}\nstart {} s, total {} s\nfetch {} ms\nrustc {} ms\nstore {} ms",
        bar.crate_name,
        bar.kind,
        bar.thunk,
        worker,
        seconds(bar.start_ms),
        seconds(total_ms),
        bar.fetch_ms,
        bar.run_ms,
        bar.upload_ms,
    );
    if bar.critical {
        tooltip.push_str("\non the critical path");
    }
    write!(
        out,
        "<div class=\"bar{}\" data-thunk=\"{}\" style=\"left:{:.1}px;width:{:.1}px\" title=\"{}\">",
        if bar.critical { " critical" } else { "" },
        Escaped(&bar.thunk),
        px(bar.start_ms),
        width_px,
        Escaped(&tooltip),
    )?;
    if total_ms > 0 {
        for (class, ms) in [("seg-fetch", bar.fetch_ms), ("seg-run", bar.run_ms), ("seg-upload", bar.upload_ms)] {
            if ms > 0 {
                let percent = ms as f64 * 100.0 / total_ms as f64;
                write!(out, "<span class=\"seg {class}\" style=\"width:{percent:.2}%\"></span>")?;
            }
        }
    }
    if width_px >= MIN_NAMED_BAR_PX {
        write!(out, "<span class=\"name\">{}</span>", Escaped(&bar.crate_name))?;
    }
    out.push_str("</div>");
    Ok(())
}

/// The smallest round step that keeps the axis to at most `MAX_TICKS` ticks.
fn tick_step_ms(span_ms: u64) -> u64 {
    const STEPS_MS: [u64; 16] = [
        100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000,
        1_800_000, 3_600_000,
    ];
    const HOUR_MS: u64 = 3_600_000;
    STEPS_MS
        .into_iter()
        .find(|step| span_ms / step <= MAX_TICKS)
        .unwrap_or_else(|| span_ms.div_ceil(MAX_TICKS).next_multiple_of(HOUR_MS))
}

fn tick_label(tick_ms: u64, step_ms: u64) -> String {
    if step_ms < 1000 {
        format!("{}.{}s", tick_ms / 1000, tick_ms % 1000 / 100)
    } else {
        format!("{}s", tick_ms / 1000)
    }
}

fn write_slowest(out: &mut String, timeline: &Timeline) -> fmt::Result {
    let mut all: Vec<(&Bar, &str)> = timeline
        .workers
        .iter()
        .flat_map(|worker| worker.bars.iter().map(move |bar| (bar, worker.name.as_str())))
        .collect();
    // Ties broken by name so the table does not change between renderings of the same build.
    all.sort_by(|(a, _), (b, _)| {
        b.total_ms()
            .cmp(&a.total_ms())
            .then_with(|| a.crate_name.cmp(&b.crate_name))
            .then_with(|| a.thunk.cmp(&b.thunk))
    });
    all.truncate(SLOWEST_ROWS);

    out.push_str(
        "<table class=\"slowest\">\n<thead><tr><th>crate</th><th>kind</th><th>worker</th>\
         <th>total s</th><th>run s</th><th>critical</th></tr></thead>\n<tbody>\n",
    );
    for (bar, worker) in all {
        writeln!(
            out,
            "<tr><td title=\"thunk {}\">{}</td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            Escaped(&bar.thunk),
            Escaped(&bar.crate_name),
            Escaped(&bar.kind),
            Escaped(worker),
            seconds(bar.total_ms()),
            seconds(bar.run_ms),
            if bar.critical { "yes" } else { "" },
        )?;
    }
    out.push_str("</tbody>\n</table>\n");
    Ok(())
}

/// Milliseconds as seconds with two decimals, rounded half up (exactly: no binary fractions).
fn seconds(ms: u64) -> String {
    let centiseconds = ms / 10 + u64::from(ms % 10 >= 5);
    format!("{}.{:02}", centiseconds / 100, centiseconds % 100)
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the Unix epoch.
pub fn utc_date_time(unix_s: u64) -> String {
    let (year, month, day) = civil_from_days(unix_s / 86_400);
    let second_of_day = unix_s % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// restricted to days on or after the epoch): eras of 400 years, years starting on 1 March so that the
/// leap day comes last.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted / 146_097;
    let day_of_era = shifted - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 { month_from_march + 3 } else { month_from_march - 9 };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// Text escaped for HTML content and for double- or single-quoted attribute values.
struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(index) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..index])?;
            f.write_str(match rest.as_bytes()[index] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[index + 1..];
        }
        f.write_str(rest)
    }
}

// Colours after cargo's timings page: light background, soft fills, one loud colour for the critical path.
const STYLE: &str = r#"<style>
:root { --fetch: #f0b54a; --run: #6aa5e0; --upload: #7cc47a; --critical: #d62728; }
body { font-family: system-ui, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 14px;
       color: #222; background: #fff; margin: 16px; }
h1 { font-size: 22px; margin: 0 0 12px; }
h2 { font-size: 17px; margin: 24px 0 8px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 3px 10px; text-align: left; }
th { background: #f2f2f2; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.summary th { width: 140px; }
table.slowest tbody tr:nth-child(even) { background: #fafafa; }
.legend { margin: 0 0 8px; font-size: 13px; }
.swatch { display: inline-block; width: 16px; height: 12px; vertical-align: -1px; margin: 0 5px 0 14px; }
.swatch:first-child { margin-left: 0; }
.swatch-critical { box-sizing: border-box; border: 3px solid var(--critical); background: #fff; }
.chart { width: fit-content; border: 1px solid #ccc; background: #fff; }
.axis { position: relative; height: 20px; margin-left: var(--label-width); width: var(--chart-width);
        border-bottom: 1px solid #999; font-size: 11px; color: #555; }
.tick { position: absolute; top: 3px; transform: translateX(-50%); white-space: nowrap; }
.rows { position: relative; min-height: 24px; }
.grid { position: absolute; top: 0; bottom: 0; left: var(--label-width); width: var(--chart-width); z-index: 1;
        pointer-events: none; }
.gridline { position: absolute; top: 0; bottom: 0; border-left: 1px solid #e2e2e2; }
.empty { margin: 0; padding: 4px 8px 4px calc(var(--label-width) + 8px); color: #777; }
.worker-row { display: flex; border-bottom: 1px solid #eee; }
.worker-row:nth-child(odd) { background: #f7f7f7; }
.worker-label { flex: none; width: var(--label-width); box-sizing: border-box; padding: 0 8px; font-size: 12px;
                line-height: 24px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
                border-right: 1px solid #ccc; }
.lanes { flex: none; width: var(--chart-width); }
.lane { position: relative; height: 24px; }
.bar { position: absolute; top: 4px; height: 16px; display: flex; overflow: hidden; background: #999; z-index: 2; }
.bar.critical { outline: 3px solid var(--critical); z-index: 3; }
.seg { flex: none; height: 100%; }
.seg-fetch { background: var(--fetch); }
.seg-run { background: var(--run); }
.seg-upload { background: var(--upload); }
.name { position: absolute; left: 3px; right: 2px; top: 0; line-height: 16px; font-size: 11px; color: #111;
        white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
</style>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(thunk: &str, crate_name: &str, start_ms: u64, run_ms: u64, critical: bool) -> Bar {
        Bar {
            thunk: thunk.to_owned(),
            crate_name: crate_name.to_owned(),
            kind: "lib".to_owned(),
            start_ms,
            fetch_ms: 10,
            run_ms,
            upload_ms: 5,
            critical,
        }
    }

    /// Three workers: two busy, one idle; two bars on the critical path.
    fn sample() -> Timeline {
        Timeline {
            title: "sample — lambda=2 + local=1".to_owned(),
            started_unix_s: 1_764_460_800,
            wall_ms: 4_000,
            workers: vec![
                Worker {
                    name: "lambda 3f2a9c01".to_owned(),
                    bars: vec![
                        bar("aaaaaaaaaaaa", "memchr", 0, 900, true),
                        bar("bbbbbbbbbbbb", "regex_syntax", 1_000, 2_000, true),
                    ],
                },
                Worker {
                    name: "lambda 77e0d412".to_owned(),
                    bars: vec![bar("cccccccccccc", "serde", 100, 1_500, false)],
                },
                Worker { name: "local 1".to_owned(), bars: Vec::new() },
            ],
            summary: vec![("engine".to_owned(), "lambda=2 + local=1".to_owned())],
        }
    }

    fn count(haystack: &str, needle: &str) -> usize {
        haystack.matches(needle).count()
    }

    #[test]
    fn one_row_per_worker_and_one_bar_per_thunk() {
        let timeline = sample();
        let html = render(&timeline);
        assert_eq!(count(&html, "class=\"worker-row"), timeline.workers.len());
        assert_eq!(count(&html, "class=\"worker-row\" data-worker=\"local 1\""), 1);
        assert_eq!(count(&html, "class=\"bar"), 3);
        assert_eq!(count(&html, "class=\"bar-"), 0, "no other class may start with `bar`");
        for thunk in ["aaaaaaaaaaaa", "bbbbbbbbbbbb", "cccccccccccc"] {
            assert_eq!(count(&html, &format!("data-thunk=\"{thunk}\"")), 1, "{thunk}");
        }
        // Three phases, three segments per bar, none of them a `bar`.
        assert_eq!(count(&html, "class=\"seg seg-"), 9);
    }

    #[test]
    fn critical_bars_are_marked() {
        let html = render(&sample());
        assert_eq!(count(&html, "class=\"bar critical\""), 2);
        assert_eq!(count(&html, "class=\"bar\""), 1);
        assert!(html.contains("class=\"bar critical\" data-thunk=\"aaaaaaaaaaaa\""));
        assert!(html.contains("class=\"bar\" data-thunk=\"cccccccccccc\""));
        assert!(html.contains(".bar.critical { outline: 3px solid"));
    }

    #[test]
    fn bars_are_placed_in_proportion_to_time() {
        let html = render(&sample());
        // 4 s on 1200 px: regex_syntax starts at 1 s and lasts 2.015 s.
        assert!(html.contains("data-thunk=\"bbbbbbbbbbbb\" style=\"left:300.0px;width:604.5px\""), "{html}");
        assert!(html.contains("<span class=\"name\">regex_syntax</span>"));
    }

    #[test]
    fn text_is_escaped() {
        let mut timeline = sample();
        timeline.title = "<script>".to_owned();
        timeline.workers[0].name = "w'\"".to_owned();
        timeline.workers[0].bars[1].crate_name = "<x>&\"'".to_owned();
        timeline.summary.push(("a<b".to_owned(), "c>d".to_owned()));
        let html = render(&timeline);
        assert!(!html.contains("<x>"));
        assert!(!html.contains("<script>"));
        assert!(html.contains("<h1>&lt;script&gt;</h1>"));
        assert!(html.contains("<span class=\"name\">&lt;x&gt;&amp;&quot;&#39;</span>"));
        assert!(html.contains("data-worker=\"w&#39;&quot;\""));
        assert!(html.contains("<th>a&lt;b</th><td>c&gt;d</td>"));
        assert_eq!(Escaped("plain").to_string(), "plain");
        assert_eq!(Escaped("&&").to_string(), "&amp;&amp;");
    }

    #[test]
    fn dates_are_utc() {
        for (unix_s, expected) in [
            (0, "1970-01-01 00:00:00 UTC"),
            (1_764_460_800, "2025-11-30 00:00:00 UTC"),
            (951_782_400, "2000-02-29 00:00:00 UTC"),
            (951_868_799, "2000-02-29 23:59:59 UTC"),
            (951_868_800, "2000-03-01 00:00:00 UTC"),
            (1_709_251_199, "2024-02-29 23:59:59 UTC"),
            (4_107_542_399, "2100-02-28 23:59:59 UTC"),
            (4_107_542_400, "2100-03-01 00:00:00 UTC"),
        ] {
            assert_eq!(utc_date_time(unix_s), expected, "{unix_s}");
        }
        assert!(render(&sample()).contains("<tr><th>started</th><td>2025-11-30 00:00:00 UTC</td></tr>"));
    }

    #[test]
    fn nothing_refers_to_the_network() {
        let mut timeline = sample();
        timeline.wall_ms = 0;
        for html in [render(&timeline), render(&Timeline::default())] {
            assert!(!html.contains("http"));
            assert!(!html.contains("//"));
            assert!(!html.contains("<script"));
            assert!(!html.contains("<link"));
            assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"));
        }
    }

    #[test]
    fn slowest_table_is_sorted_and_capped() {
        let bars: Vec<Bar> = (0..30u64)
            .map(|i| bar(&format!("{i:012x}"), &format!("crate{i}"), i * 100, (i * 37) % 30 * 100, i == 7))
            .collect();
        let timeline = Timeline {
            workers: vec![
                Worker { name: "w".to_owned(), bars: bars[..15].to_vec() },
                Worker { name: "v".to_owned(), bars: bars[15..].to_vec() },
            ],
            wall_ms: 10_000,
            ..Timeline::default()
        };
        let html = render(&timeline);
        let table = &html[html.find("<table class=\"slowest\">").expect("slowest table")..];
        let body = &table[table.find("<tbody>").expect("tbody")..table.find("</tbody>").expect("/tbody")];
        assert_eq!(count(body, "<tr>"), SLOWEST_ROWS);
        let rows: Vec<(&str, f64)> = body
            .split("<tr>")
            .skip(1)
            .map(|row| {
                let crate_name = row.split("\">").nth(1).and_then(|cell| cell.split('<').next()).expect("crate cell");
                let total = row.split("<td class=\"num\">").nth(1).and_then(|cell| cell.split('<').next());
                (crate_name, total.expect("total cell").parse().expect("seconds"))
            })
            .collect();
        assert!(rows.windows(2).all(|pair| pair[0].1 >= pair[1].1), "{rows:?}");
        let mut expected: Vec<&Bar> = bars.iter().collect();
        expected.sort_by_key(|bar| std::cmp::Reverse(bar.total_ms()));
        let expected: Vec<&str> = expected[..SLOWEST_ROWS].iter().map(|bar| bar.crate_name.as_str()).collect();
        assert_eq!(rows.iter().map(|(crate_name, _)| *crate_name).collect::<Vec<_>>(), expected);
        // crate7 (critical) runs 1.9 s of the 1.915 s it takes.
        assert!(body.contains(
            "<tr><td title=\"thunk 000000000007\">crate7</td><td>lib</td><td>w</td>\
             <td class=\"num\">1.92</td><td class=\"num\">1.90</td><td>yes</td></tr>"
        ));
    }

    #[test]
    fn empty_timeline_renders() {
        let html = render(&Timeline::default());
        assert_eq!(count(&html, "class=\"worker-row"), 0);
        assert_eq!(count(&html, "class=\"bar"), 0);
        assert!(html.contains("No thunk was forced."));
        assert!(html.contains("<tr><th>started</th><td>1970-01-01 00:00:00 UTC</td></tr>"));
        assert!(html.contains("<tbody>\n</tbody>"));
        assert!(html.ends_with("</html>\n"));
    }

    #[test]
    fn zero_wall_time_does_not_divide_by_zero() {
        let timeline = Timeline {
            wall_ms: 0,
            workers: vec![Worker {
                name: "local 1".to_owned(),
                bars: vec![Bar { thunk: "000000000000".to_owned(), ..Bar::default() }],
            }],
            ..Timeline::default()
        };
        let html = render(&timeline);
        assert!(!html.contains("NaN") && !html.contains("inf"), "{html}");
        assert!(html.contains("style=\"left:0.0px;width:1.0px\""));
        // Bars past the wall time stretch the axis rather than overflow it.
        let mut late = sample();
        late.wall_ms = 1_000;
        let html = render(&late);
        assert!(html.contains("data-thunk=\"bbbbbbbbbbbb\" style=\"left:398.0px;width:802.0px\""), "{html}");
    }

    #[test]
    fn overlapping_bars_get_their_own_lane() {
        let bars = [bar("a", "a", 0, 1_000, false), bar("b", "b", 500, 100, false), bar("c", "c", 1_015, 10, false)];
        let lanes = lanes(&bars);
        let names: Vec<Vec<&str>> =
            lanes.iter().map(|lane| lane.iter().map(|bar| bar.thunk.as_str()).collect()).collect();
        assert_eq!(names, [vec!["a", "c"], vec!["b"]]);
        assert_eq!(super::lanes(&[]).len(), 1);
    }

    #[test]
    fn ticks_stay_few_and_round() {
        for (span_ms, step_ms) in [(1, 100), (1_200, 100), (1_300, 200), (59_000, 5_000), (600_000, 60_000)] {
            assert_eq!(tick_step_ms(span_ms), step_ms, "{span_ms}");
        }
        assert_eq!(tick_step_ms(100 * 3_600_000), 9 * 3_600_000);
        assert_eq!(tick_label(1_500, 500), "1.5s");
        assert_eq!(tick_label(30_000, 5_000), "30s");
    }
}
