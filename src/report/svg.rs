//! Charts as inline SVG, built by hand (no charting crate, no JavaScript).
//!
//! A chart is a time axis and one value axis; each point is one mark (`<circle>` or a
//! bar `<rect class="bar">`) with a `<title>` the browser shows on hover, and the
//! `<svg>` carries `data-points="N"` (the number of marks) so tests and scripts can
//! check what was drawn. Output is well-formed XML (every element closed, attributes
//! quoted, text escaped), which is also valid HTML.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::support::units::human;

const W: f64 = 540.0;
const H: f64 = 200.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// Good, bad and neutral mark colours.
pub const GREEN: &str = "#2e7d32";
/// Failures and mismatches.
pub const RED: &str = "#c62828";
/// Neutral series.
pub const BLUE: &str = "#1565c0";
/// Warnings (partial, unverified).
pub const AMBER: &str = "#ef8f00";

/// How values read on the value axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Bytes (KiB, MiB, …).
    Bytes,
    /// Seconds (s, m, h).
    Seconds,
    /// Plain numbers.
    Count,
}

impl Unit {
    /// A value as text.
    pub fn fmt(self, v: f64) -> String {
        match self {
            Unit::Bytes => human(v.max(0.0) as u64),
            Unit::Seconds => {
                if v < 10.0 {
                    format!("{v:.2} s")
                } else if v < 120.0 {
                    format!("{v:.1} s")
                } else if v < 7200.0 {
                    format!("{:.1} min", v / 60.0)
                } else if v < 3.0 * 86_400.0 {
                    format!("{:.1} h", v / 3600.0)
                } else {
                    format!("{:.1} d", v / 86_400.0)
                }
            }
            Unit::Count => {
                if v.fract() == 0.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            }
        }
    }
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A line through dots.
    Line,
    /// Bars from zero.
    Bars,
    /// Dots only.
    Dots,
}

/// One mark.
#[derive(Debug, Clone)]
pub struct Point {
    /// Time.
    pub at: DateTime<Utc>,
    /// Value.
    pub y: f64,
    /// Mark colour (e.g. by outcome).
    pub color: &'static str,
    /// Hover text.
    pub label: String,
}

/// One series.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend name.
    pub name: String,
    /// Line colour.
    pub color: &'static str,
    /// Drawing style.
    pub style: Style,
    /// Points, oldest first.
    pub points: Vec<Point>,
}

/// One chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// `id` of the `<svg>` (stable, for tests and links).
    pub id: String,
    /// Title above it.
    pub title: String,
    /// Value unit.
    pub unit: Unit,
    /// Series.
    pub series: Vec<Series>,
    /// A horizontal limit line (value, label), e.g. the RPO.
    pub limit: Option<(f64, String)>,
    /// Time ranges shaded red (e.g. over the RPO).
    pub shade: Vec<(DateTime<Utc>, DateTime<Utc>)>,
    /// What the chart shows when it has no point.
    pub empty: String,
}

impl Chart {
    /// Marks drawn.
    pub fn points(&self) -> usize {
        self.series.iter().map(|s| s.points.len()).sum()
    }
}

/// Escape text for XML/HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// A rounded-up axis maximum: 1, 2 or 5 times a power of ten (of the unit).
fn nice_max(v: f64, unit: Unit) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let base: f64 = if unit == Unit::Bytes { 1024.0 } else { 10.0 };
    let mut p = 1.0;
    if unit == Unit::Bytes {
        while p * base <= v {
            p *= base;
        }
        for m in [
            1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
        ] {
            if p * m >= v {
                return p * m;
            }
        }
        return p * base;
    }
    let e = v.log10().floor();
    p = 10f64.powf(e);
    for m in [1.0, 2.0, 5.0, 10.0] {
        if p * m >= v {
            return p * m;
        }
    }
    p * 10.0
}

/// Render `c` as an `<svg>` element.
pub fn render(c: &Chart) -> String {
    let mut o = String::new();
    let n = c.points();
    let _ = write!(
        o,
        r#"<svg id="{}" class="chart" data-points="{n}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(&c.id),
        esc(&c.title)
    );
    let _ = write!(o, "<title>{}</title>", esc(&c.title));
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let _ = write!(
        o,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ddd"/>"##
    );
    let all: Vec<&Point> = c.series.iter().flat_map(|s| s.points.iter()).collect();
    if all.is_empty() {
        if !c.shade.is_empty() {
            // Nothing to draw, but all of the time is over the limit (e.g. no verified
            // snapshot ever): shade the whole plot.
            let _ = write!(
                o,
                r##"<rect class="shade" x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="{RED}" fill-opacity="0.12"/>"##
            );
        }
        let _ = write!(
            o,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#777" font-size="13">{}</text></svg>"##,
            LEFT + pw / 2.0,
            TOP + ph / 2.0,
            esc(&c.empty)
        );
        return o;
    }
    let mut t0 = all.iter().map(|p| p.at).min().unwrap_or_default();
    let mut t1 = all.iter().map(|p| p.at).max().unwrap_or_default();
    for (a, b) in &c.shade {
        t0 = t0.min(*a);
        t1 = t1.max(*b);
    }
    let span = (t1 - t0).num_milliseconds().max(1) as f64;
    let single = t1 == t0;
    let bars = c.series.iter().any(|s| s.style == Style::Bars);
    // Bars need room on both sides.
    let pad = if bars || single { pw * 0.04 } else { 0.0 };
    let x = |t: DateTime<Utc>| {
        if single {
            LEFT + pw / 2.0
        } else {
            LEFT + pad + (t - t0).num_milliseconds() as f64 / span * (pw - 2.0 * pad)
        }
    };
    let mut ymax = all.iter().map(|p| p.y).fold(0.0, f64::max);
    if let Some((l, _)) = &c.limit {
        ymax = ymax.max(*l * 1.1);
    }
    let ymax = nice_max(ymax, c.unit);
    let y = |v: f64| TOP + ph - (v.max(0.0) / ymax) * ph;

    for (a, b) in &c.shade {
        let (xa, xb) = (x(*a), x(*b));
        let _ = write!(
            o,
            r##"<rect class="shade" x="{xa:.1}" y="{TOP}" width="{:.1}" height="{ph}" fill="{RED}" fill-opacity="0.12"/>"##,
            (xb - xa).max(1.0)
        );
    }
    // Value grid and labels: 0, half, max.
    for f in [0.0, 0.5, 1.0] {
        let v = ymax * f;
        let yy = y(v);
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11" fill="#555">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            yy + 4.0,
            esc(&c.unit.fmt(v))
        );
    }
    // Time labels: first, middle, last.
    let fmt_t = |t: DateTime<Utc>| {
        if span > 2.0 * 86_400_000.0 {
            t.format("%Y-%m-%d").to_string()
        } else {
            t.format("%m-%d %H:%M").to_string()
        }
    };
    let marks: Vec<(f64, DateTime<Utc>)> = if single {
        vec![(x(t0), t0)]
    } else {
        let mid = t0 + (t1 - t0) / 2;
        vec![(x(t0), t0), (x(mid), mid), (x(t1), t1)]
    };
    for (i, (xx, t)) in marks.iter().enumerate() {
        let anchor = match (marks.len(), i) {
            (1, _) => "middle",
            (_, 0) => "start",
            (_, 2) => "end",
            _ => "middle",
        };
        let _ = write!(
            o,
            r##"<text x="{xx:.1}" y="{:.1}" text-anchor="{anchor}" font-size="11" fill="#555">{}</text>"##,
            H - 8.0,
            esc(&fmt_t(*t))
        );
    }
    if let Some((l, label)) = &c.limit {
        let yy = y(*l);
        let _ = write!(
            o,
            r##"<line class="limit" x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{RED}" stroke-dasharray="5 3"/><text x="{:.1}" y="{:.1}" text-anchor="end" font-size="11" fill="{RED}">{}</text>"##,
            W - RIGHT,
            W - RIGHT - 4.0,
            yy - 4.0,
            esc(label)
        );
    }
    let bar_w = if bars {
        let k = c
            .series
            .iter()
            .filter(|s| s.style == Style::Bars)
            .map(|s| s.points.len())
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        ((pw - 2.0 * pad) / k * 0.7).clamp(1.0, 24.0)
    } else {
        0.0
    };
    for s in &c.series {
        if s.style == Style::Line && s.points.len() > 1 {
            let path: Vec<String> = s
                .points
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.at), y(p.y)))
                .collect();
            let _ = write!(
                o,
                r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
                s.color,
                path.join(" ")
            );
        }
        for p in &s.points {
            let (xx, yy) = (x(p.at), y(p.y));
            match s.style {
                Style::Bars => {
                    let _ = write!(
                        o,
                        r#"<rect class="bar" x="{:.1}" y="{yy:.1}" width="{bar_w:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"#,
                        xx - bar_w / 2.0,
                        (TOP + ph - yy).max(0.5),
                        p.color,
                        esc(&p.label)
                    );
                }
                Style::Line | Style::Dots => {
                    let _ = write!(
                        o,
                        r#"<circle class="pt" cx="{xx:.1}" cy="{yy:.1}" r="3.5" fill="{}"><title>{}</title></circle>"#,
                        p.color,
                        esc(&p.label)
                    );
                }
            }
        }
    }
    // Legend for several series.
    if c.series.len() > 1 {
        let mut lx = LEFT + 6.0;
        for s in &c.series {
            let _ = write!(
                o,
                r##"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="11" fill="#333">{}</text>"##,
                TOP + 4.0,
                s.color,
                lx + 13.0,
                TOP + 13.0,
                esc(&s.name)
            );
            lx += 20.0 + 7.0 * s.name.len() as f64;
        }
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(h: i64, y: f64) -> Point {
        Point {
            at: DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap(),
            y,
            color: BLUE,
            label: format!("<{y}>"),
        }
    }

    #[test]
    fn one_mark_per_point_and_escaped_text() {
        let c = Chart {
            id: "d".into(),
            title: "a & b".into(),
            unit: Unit::Seconds,
            series: vec![Series {
                name: "x".into(),
                color: BLUE,
                style: Style::Line,
                points: vec![pt(0, 1.0), pt(1, 3.0), pt(2, 2.0)],
            }],
            limit: Some((2.5, "RPO".into())),
            shade: vec![],
            empty: "none".into(),
        };
        let s = render(&c);
        assert!(s.contains(r#"data-points="3""#));
        assert_eq!(s.matches("<circle").count(), 3);
        assert!(s.contains("a &amp; b"));
        assert!(s.contains("&lt;3&gt;"));
        assert!(!s.contains("<3>"));
    }

    #[test]
    fn empty_chart_says_so() {
        let c = Chart {
            id: "e".into(),
            title: "t".into(),
            unit: Unit::Count,
            series: vec![],
            limit: None,
            shade: vec![],
            empty: "no drills yet".into(),
        };
        let s = render(&c);
        assert!(s.contains(r#"data-points="0""#) && s.contains("no drills yet"));
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(3.2, Unit::Count), 5.0);
        assert_eq!(nice_max(0.0, Unit::Count), 1.0);
        assert_eq!(nice_max(1500.0, Unit::Bytes), 2048.0);
    }
}
