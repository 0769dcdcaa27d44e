//! Log-log line charts in SVG, for `addrspace bench scale --svg`.

use crate::svg::Doc;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Stroke colour.
    pub colour: &'static str,
    /// Points (x, y), both positive.
    pub points: Vec<(f64, f64)>,
}

/// One chart: axes titles and its lines.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Above the chart.
    pub title: String,
    /// Under the x axis.
    pub x_label: String,
    /// Beside the y axis.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
}

const PANEL_W: f64 = 520.0;
const PANEL_H: f64 = TOP + PLOT_H + 60.0;
const LEFT: f64 = 80.0;
const TOP: f64 = 92.0;
const PLOT_W: f64 = 400.0;
const PLOT_H: f64 = 250.0;

/// Powers of ten spanning `lo..=hi` (as exponents).
fn decades(lo: f64, hi: f64) -> (i32, i32) {
    let a = lo.log10().floor() as i32;
    let b = hi.log10().ceil() as i32;
    (a, if b == a { a + 1 } else { b })
}

fn tick_label(e: i32) -> String {
    match e {
        0 => "1".into(),
        1 => "10".into(),
        2 => "100".into(),
        3 => "1k".into(),
        4 => "10k".into(),
        5 => "100k".into(),
        6 => "1M".into(),
        7 => "10M".into(),
        8 => "100M".into(),
        9 => "1G".into(),
        e => format!("1e{e}"),
    }
}

/// Draws `panels` side by side under `title`, with `note` under it.
pub fn loglog(title: &str, note: &str, panels: &[Panel]) -> String {
    let mut doc = Doc::default();
    doc.text(20.0, 28.0, r##"class="title""##, title);
    doc.text(20.0, 48.0, r##"class="note""##, note);
    for (k, p) in panels.iter().enumerate() {
        let ox = k as f64 * PANEL_W;
        let pts = p.series.iter().flat_map(|s| s.points.iter());
        let (mut xlo, mut xhi, mut ylo, mut yhi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts.filter(|(x, y)| *x > 0.0 && *y > 0.0) {
            xlo = xlo.min(x);
            xhi = xhi.max(x);
            ylo = ylo.min(y);
            yhi = yhi.max(y);
        }
        if xlo > xhi {
            continue;
        }
        let (xa, xb) = decades(xlo, xhi);
        let (ya, yb) = decades(ylo, yhi);
        let px = |x: f64| ox + LEFT + (x.log10() - f64::from(xa)) / f64::from(xb - xa) * PLOT_W;
        let py = |y: f64| TOP + PLOT_H - (y.log10() - f64::from(ya)) / f64::from(yb - ya) * PLOT_H;
        doc.text(ox + LEFT, TOP - 14.0, r##"class="ptitle""##, &p.title);
        doc.rect(
            ox + LEFT,
            TOP,
            PLOT_W,
            PLOT_H,
            r##"fill="#fafafa" stroke="#90a4ae""##,
        );
        for e in xa..=xb {
            let x = px(10f64.powi(e));
            doc.line(x, TOP, x, TOP + PLOT_H, r##"stroke="#e0e0e0""##);
            doc.text(
                x,
                TOP + PLOT_H + 16.0,
                r##"class="tick" text-anchor="middle""##,
                &tick_label(e),
            );
        }
        for e in ya..=yb {
            let y = py(10f64.powi(e));
            doc.line(ox + LEFT, y, ox + LEFT + PLOT_W, y, r##"stroke="#e0e0e0""##);
            doc.text(
                ox + LEFT - 6.0,
                y + 4.0,
                r##"class="tick" text-anchor="end""##,
                &format!("{} ns", tick_label(e)),
            );
        }
        doc.text(
            ox + LEFT + PLOT_W / 2.0,
            TOP + PLOT_H + 36.0,
            r##"class="axis" text-anchor="middle""##,
            &p.x_label,
        );
        doc.raw(&format!(
            r##"<text x="{x:.1}" y="{y:.1}" class="axis" text-anchor="middle" transform="rotate(-90 {x:.1} {y:.1})">{}</text>"##,
            crate::svg::escape(&p.y_label),
            x = ox + 18.0,
            y = TOP + PLOT_H / 2.0,
        ));
        for s in &p.series {
            let path: Vec<String> = s
                .points
                .iter()
                .filter(|(x, y)| *x > 0.0 && *y > 0.0)
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            doc.raw(&format!(
                r##"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5"/>"##,
                path.join(" "),
                s.colour
            ));
            for &(x, y) in s.points.iter().filter(|(x, y)| *x > 0.0 && *y > 0.0) {
                doc.raw(&format!(
                    r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{}"><title>{}: {y:.0} ns</title></circle>"##,
                    px(x),
                    py(y),
                    s.colour,
                    crate::svg::escape(&s.label)
                ));
            }
        }
        // The legend goes over the lines, on a pale backing.
        doc.rect(
            ox + LEFT + 6.0,
            TOP + 4.0,
            290.0,
            18.0 * p.series.len() as f64 + 4.0,
            r##"fill="white" fill-opacity="0.85""##,
        );
        for (i, s) in p.series.iter().enumerate() {
            let ly = TOP + 16.0 + 18.0 * i as f64;
            doc.line(
                ox + LEFT + 12.0,
                ly - 4.0,
                ox + LEFT + 36.0,
                ly - 4.0,
                &format!(r##"stroke="{}" stroke-width="3""##, s.colour),
            );
            doc.text(ox + LEFT + 42.0, ly, r##"class="legend""##, &s.label);
        }
    }
    let defs = r##"<style>
  text { font-family: 'DejaVu Sans', Arial, sans-serif; font-size: 12px; fill: #212121; }
  .title { font-size: 17px; font-weight: bold; }
  .note { fill: #546e7a; }
  .ptitle { font-size: 14px; font-weight: bold; }
  .tick { font-size: 11px; fill: #546e7a; }
  .axis { font-size: 12px; }
</style>"##;
    doc.finish(PANEL_W * panels.len().max(1) as f64, PANEL_H, defs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades_cover_the_data() {
        assert_eq!(decades(1000.0, 100_000.0), (3, 5));
        assert_eq!(decades(150.0, 900.0), (2, 3));
        assert_eq!(decades(100.0, 100.0), (2, 3));
    }

    #[test]
    fn every_point_is_drawn() {
        let svg = loglog(
            "t",
            "n",
            &[Panel {
                title: "p".into(),
                x_label: "x".into(),
                y_label: "y".into(),
                series: vec![Series {
                    label: "s".into(),
                    colour: "red",
                    points: vec![(1.0, 10.0), (10.0, 100.0), (100.0, 50.0)],
                }],
            }],
        );
        assert_eq!(svg.matches("<circle").count(), 3);
        assert!(svg.contains("<polyline"));
    }
}
