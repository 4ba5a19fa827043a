//! Small charts drawn on the server as inline SVG: bars from numbers, with
//! no script and no library, so they show under the console's content
//! policy and on a machine with no internet. Colours come from the
//! stylesheet's classes, so both themes apply.
//!
//! Accessible twice over: each chart is an image (`role="img"`) named by
//! its `<title>` and described by its `<desc>` (which says the largest
//! value), each bar carries its own `<title>` (a tooltip with its exact
//! number), and the caller puts the same numbers in a table, visually
//! hidden, for screen readers and for copying.
//!
//! Also here: a job's batch-duration histogram (its checkpoint's
//! `batch_seconds` counts per `progress::BATCH_BUCKETS` bucket).

use janitor_workers::progress::BATCH_BUCKETS;
use maud::{html, Markup};

/// The drawing's coordinate space; it scales to the width of the page.
const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 140.0;
/// Room on the left for the largest value, and below for the labels.
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 18.0;
const TOP: f64 = 8.0;

/// One bar: its value, its tooltip, and the label under it (if any: a
/// chart of 24 hours labels every sixth).
pub struct Bar {
    pub value: i64,
    pub tooltip: String,
    pub label: Option<String>,
}

/// What a chart is called and how it is drawn.
pub struct Chart<'a> {
    /// Unique on the page: the title's and description's ids derive from it.
    pub id: &'a str,
    pub title: &'a str,
    /// What the chart shows, for the description (the largest value is
    /// added to it).
    pub desc: &'a str,
    /// The bars' class (`bar-deleted`, `bar-errors`, `bar-batches`).
    pub class: &'a str,
}

/// A bar chart: one bar per value, scaled to the largest.
pub fn bars(chart: &Chart<'_>, bars: &[Bar]) -> Markup {
    let max = bars.iter().map(|bar| bar.value).max().unwrap_or(0).max(0);
    let plot = HEIGHT - TOP - BOTTOM;
    let step = (WIDTH - LEFT) / bars.len().max(1) as f64;
    let gap = (step * 0.15).min(4.0);
    let (title_id, desc_id) = (format!("{}-title", chart.id), format!("{}-desc", chart.id));
    let height = |value: i64| {
        if max == 0 || value <= 0 {
            return 0.0;
        }
        // A value that is not zero stays visible beside a much larger one.
        (value as f64 / max as f64 * plot).max(1.5)
    };
    html! {
        svg.chart id=(chart.id) viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } role="img"
            aria-labelledby={ (title_id) " " (desc_id) } {
            title id=(title_id) { (chart.title) }
            desc id=(desc_id) { (chart.desc) " The largest bar is " (max) "." }
            text.value x=(LEFT - 4.0) y=(TOP + 8.0) text-anchor="end" { (compact(max)) }
            text.value x=(LEFT - 4.0) y=(HEIGHT - BOTTOM) text-anchor="end" { "0" }
            line.axis x1=(LEFT) y1=(HEIGHT - BOTTOM) x2=(WIDTH) y2=(HEIGHT - BOTTOM) {}
            @for (i, bar) in bars.iter().enumerate() {
                @let x = LEFT + i as f64 * step;
                @let h = height(bar.value);
                rect class={ "bar " (chart.class) } x=(fixed(x + gap / 2.0)) y=(fixed(HEIGHT - BOTTOM - h))
                    width=(fixed(step - gap)) height=(fixed(h)) data-value=(bar.value) {
                    title { (bar.tooltip) }
                }
                @if let Some(label) = &bar.label {
                    text.label x=(fixed(x + step / 2.0)) y=(HEIGHT - 4.0) text-anchor="middle" { (label) }
                }
            }
        }
    }
}

/// A coordinate with two decimals: enough for a crisp drawing, short HTML.
fn fixed(value: f64) -> String {
    format!("{value:.2}")
}

/// A count as an axis shows it: `950`, `12k`, `3.4M`.
pub fn compact(n: i64) -> String {
    match n {
        ..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{}k", n / 1000),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// The upper bound of a batch bucket as people read it: `10 ms`, `2.5 s`.
fn bucket_label(index: usize) -> String {
    match BATCH_BUCKETS.get(index) {
        Some(&le) if le < 1.0 => format!("≤{} ms", (le * 1000.0).round()),
        Some(&le) => format!("≤{le} s"),
        None => format!(">{} s", BATCH_BUCKETS[BATCH_BUCKETS.len() - 1]),
    }
}

/// A job's batch durations, from its checkpoint: a bar per bucket, a line
/// with the count and mean, and the counts in a hidden table. Without a
/// timed batch it says so.
pub fn histogram(checkpoint: Option<&serde_json::Value>) -> Markup {
    let counts: Vec<i64> = checkpoint
        .and_then(|c| c.get("batch_seconds"))
        .and_then(|counts| serde_json::from_value(counts.clone()).ok())
        .unwrap_or_default();
    let sum = checkpoint.and_then(|c| c.get("batch_seconds_sum")).and_then(|s| s.as_f64()).unwrap_or(0.0);
    let batches: i64 = counts.iter().sum();
    let rows: Vec<(String, i64)> = counts.iter().enumerate().map(|(i, &n)| (bucket_label(i), n)).collect();
    let bars_of: Vec<Bar> = rows
        .iter()
        .map(|(label, n)| Bar { value: *n, tooltip: format!("{label}: {n} batches"), label: Some(label.clone()) })
        .collect();
    let chart = Chart {
        id: "batch-chart",
        title: "Batch durations",
        desc: "How many of this job's batches took at most each duration.",
        class: "bar-batches",
    };
    html! {
        section id="batches" aria-labelledby="batches-title" {
            h2 id="batches-title" { "Batch durations" }
            @if batches == 0 {
                p.empty { "No batch has been timed yet." }
            } @else {
                p.summary { (batches) " batches, " (format!("{:.0}", sum * 1000.0 / batches as f64)) " ms each on average." }
                (bars(&chart, &bars_of))
                table.visually-hidden id="batch-table" {
                    caption { "Batches per duration" }
                    thead { tr { th scope="col" { "Took" } th scope="col" { "Batches" } } }
                    tbody { @for (label, n) in &rows { tr { th scope="row" { (label) } td.num { (n) } } } }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_counts_read_as_people_say_them() {
        assert_eq!(bucket_label(0), "≤10 ms");
        assert_eq!(bucket_label(6), "≤1 s");
        assert_eq!(bucket_label(7), "≤2.5 s");
        assert_eq!(bucket_label(BATCH_BUCKETS.len()), ">10 s");
        assert_eq!((compact(950), compact(12_345), compact(3_400_000)), ("950".into(), "12k".into(), "3.4M".into()));
    }

    #[test]
    fn bars_scale_to_the_largest_and_keep_small_ones_visible() {
        let chart = Chart { id: "c", title: "t", desc: "d", class: "x" };
        let bar = |value| Bar { value, tooltip: format!("{value}"), label: None };
        let svg = bars(&chart, &[bar(0), bar(1), bar(1000)]).into_string();
        assert!(svg.contains(r#"height="0.00" data-value="0""#), "{svg}");
        assert!(svg.contains(r#"height="1.50" data-value="1""#), "{svg}");
        assert!(svg.contains(r#"height="114.00" data-value="1000""#), "{svg}");
        assert!(svg.contains(r#"aria-labelledby="c-title c-desc""#), "{svg}");
    }
}
