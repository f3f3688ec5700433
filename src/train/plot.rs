//! The training curves as a small self-contained SVG: loss on the left axis, accuracy on
//! the right axis (0 to 1), epochs along the bottom.
//!
//! Hand-written rather than with `plotters`: two polylines, two axes and a legend are about
//! a hundred lines of SVG text, while `plotters` (even with only its SVG backend) adds a
//! dozen crates to every build of the runtime, and without its font features it cannot
//! measure text for its layout. The SVG written here leaves text layout to the viewer.

use std::fmt::Write as _;

use super::History;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 70.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

const LOSS_COLOUR: &str = "#1f77b4";
const ACCURACY_COLOUR: &str = "#ff7f0e";
const VALIDATION_COLOUR: &str = "#2ca02c";

/// The SVG document for `history`.
pub(super) fn render(history: &History) -> String {
    let epochs = history.epochs.len();
    let losses: Vec<f64> = history.epochs.iter().map(|e| f64::from(e.loss)).collect();
    let accuracies: Vec<f64> = history.epochs.iter().map(|e| e.accuracy).collect();
    let validation: Vec<f64> =
        history.epochs.iter().filter_map(|e| e.validation.as_ref().map(|m| m.accuracy)).collect();
    let loss_max = nice_ceiling(losses.iter().copied().filter(|v| v.is_finite()).fold(0.0, f64::max));

    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x_of = |i: usize| {
        if epochs <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (epochs - 1) as f64
        }
    };
    let y_of = |v: f64, max: f64| TOP + plot_h * (1.0 - (v / max).clamp(0.0, 1.0));

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">Training curves ({epochs} epochs)</text>"#,
        WIDTH / 2.0
    );
    // Grid and tick labels: five steps on both y axes.
    for k in 0..=5 {
        let f = k as f64 / 5.0;
        let y = TOP + plot_h * (1.0 - f);
        let _ = writeln!(s, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##, WIDTH - RIGHT);
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="{LOSS_COLOUR}">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            trim(loss_max * f)
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" fill="{ACCURACY_COLOUR}">{}</text>"#,
            WIDTH - RIGHT + 6.0,
            y + 4.0,
            trim(f)
        );
    }
    // Epoch ticks: at most ten labels.
    let step = epochs.div_ceil(10).max(1);
    for i in (0..epochs).step_by(step) {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x_of(i),
            TOP + plot_h + 18.0,
            i + 1
        );
    }
    let _ =
        writeln!(s, r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">epoch</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 12.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle" fill="{LOSS_COLOUR}">loss</text>"#,
        TOP + plot_h / 2.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate({:.1} {:.1}) rotate(90)" text-anchor="middle" fill="{ACCURACY_COLOUR}">accuracy</text>"#,
        WIDTH - 18.0,
        TOP + plot_h / 2.0
    );

    let mut series = vec![("training loss", LOSS_COLOUR, polyline(&losses, &x_of, |v| y_of(v, loss_max)))];
    series.push(("training accuracy", ACCURACY_COLOUR, polyline(&accuracies, &x_of, |v| y_of(v, 1.0))));
    if validation.len() == epochs && epochs > 0 {
        series.push(("validation accuracy", VALIDATION_COLOUR, polyline(&validation, &x_of, |v| y_of(v, 1.0))));
    }
    for (k, (name, colour, points)) in series.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"><title>{name}</title></polyline>"#
        );
        let ly = TOP + 14.0 + 16.0 * k as f64;
        let lx = LEFT + 10.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{ly:.1}">{name}</text>"#,
            ly - 4.0,
            lx + 20.0,
            ly - 4.0,
            lx + 26.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn polyline(values: &[f64], x_of: &impl Fn(usize) -> f64, y_of: impl Fn(f64) -> f64) -> String {
    let mut points = String::new();
    for (i, &v) in values.iter().enumerate() {
        let v = if v.is_finite() { v } else { 0.0 };
        let _ = write!(points, "{:.1},{:.1} ", x_of(i), y_of(v));
    }
    points.trim_end().to_string()
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten at or above `v` (1 for `v <= 0`).
fn nice_ceiling(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 || v.is_infinite() {
        return 1.0;
    }
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * power).find(|&c| c >= v).unwrap_or(10.0 * power)
}

/// A tick label without trailing zeros.
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceiling_rounds_up_to_a_round_number() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(1.3), 2.0);
        assert_eq!(nice_ceiling(2.2), 2.5);
        assert_eq!(nice_ceiling(37.0), 50.0);
    }

    #[test]
    fn empty_history_renders() {
        let svg = render(&History::default());
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
    }
}
