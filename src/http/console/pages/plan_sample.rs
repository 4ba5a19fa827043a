//! The plan page's two tables: the sample of paths a dry run would delete,
//! and the in-use items it skipped, with why.

use janitor_workers::sample::{Sample, SampleItem, SAMPLE_CAP};
use janitor_workers::JobRecord;
use maud::{html, Markup};

use super::super::layout;

pub fn tables(record: &JobRecord, sample: &Sample) -> Markup {
    // Only `cleanup_all` has several phases to tell apart.
    let phases = record.operation == "cleanup_all";
    html! {
        div.plan-sample {
            (would_go(record, sample, phases))
            (in_use(record, sample, phases))
        }
    }
}

fn would_go(record: &JobRecord, sample: &Sample, phases: bool) -> Markup {
    html! {
        section id="would-go" aria-labelledby="would-go-title" {
            h2 id="would-go-title" { "What would go" }
            (shown(sample.would_delete.len(), record.deleted_count))
            @if !sample.would_delete.is_empty() {
                div.scroll {
                    table id="sample-paths" {
                        thead { tr {
                            th scope="col" { "Path" } th scope="col" { "Size" }
                            @if phases { th scope="col" { "Phase" } }
                        } }
                        tbody { @for item in &sample.would_delete { (row(item, size(item), phases)) } }
                    }
                }
            }
        }
    }
}

fn in_use(record: &JobRecord, sample: &Sample, phases: bool) -> Markup {
    html! {
        section id="in-use" aria-labelledby="in-use-title" {
            h2 id="in-use-title" { "Skipped, in use" }
            (shown(sample.skipped.len(), record.skipped_count))
            @if !sample.skipped.is_empty() {
                div.scroll {
                    table id="skipped-items" {
                        thead { tr {
                            th scope="col" { "Path" } th scope="col" { "Why" }
                            @if phases { th scope="col" { "Phase" } }
                        } }
                        tbody {
                            @for item in &sample.skipped {
                                (row(item, item.reason.clone().unwrap_or_default(), phases))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn size(item: &SampleItem) -> String {
    item.size.map_or_else(|| "—".to_owned(), layout::bytes)
}

fn row(item: &SampleItem, second: String, phases: bool) -> Markup {
    html! {
        tr {
            td { code { (item.path) } }
            td { (second) }
            @if phases { td { (item.operation) } }
        }
    }
}

/// How much of the whole the table shows.
fn shown(shown: usize, total: i64) -> Markup {
    html! {
        p.hint {
            @if total == 0 { "None." }
            @else if shown == 0 { "None sampled: this dry run kept no sample." }
            @else if total == 1 && shown == 1 { "The only one." }
            @else if shown as i64 >= total { "All " (total) ", in the order the run met them." }
            @else {
                "The first " (shown) " of " (total) " (at most " (SAMPLE_CAP) " per phase), "
                "in the order the run met them."
            }
        }
    }
}
