//! The training-curve SVG and the per-epoch callback of `fit_with`.

use crate::support;

use tensorbridge::data::Dataset;
use tensorbridge::nalgebra::DMatrix;
use tensorbridge::{Device, FitOptions};

tensorbridge::model! {
    /// Two features, two classes.
    pub struct Pair { batch: 4, features: 2, classes: 2 }
}

/// Two separable blobs: class 0 around (-1, -1), class 1 around (1, 1).
fn blobs() -> Dataset {
    let x = DMatrix::from_fn(12, 2, |r, c| if r % 2 == 0 { -1.0 } else { 1.0 } + 0.1 * ((r * 3 + c) % 5) as f32);
    Dataset::new(x, (0..12).map(|r| (r % 2) as u32).collect()).unwrap()
}

/// Fits three epochs with a plot and checks the SVG's structure; returns its path.
fn fit_with_a_plot(scratch: &str) -> std::path::PathBuf {
    let dir = support::scratch(scratch);
    let path = dir.join("curves.svg");
    let data = blobs();
    let mut seen = Vec::new();
    let mut model = Pair::new(&Device::cpu()).unwrap();
    let options = FitOptions::new().progress(false).validation(&data).plot_svg(&path).on_epoch(|e| seen.push(e.epoch));
    let history = model.fit_with(&data, &[0.5, 0.5, 0.2], 3, options).unwrap();
    assert_eq!(seen, vec![1, 2, 3]);
    assert_eq!(history.epochs.len(), 3);
    assert!(history.epochs.iter().all(|e| e.validation.as_ref().is_some_and(|m| m.rows == 12)));

    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\"") && svg.trim_end().ends_with("</svg>"));
    // Training loss, training accuracy, validation accuracy: three lines of three points.
    let lines: Vec<&str> = svg.lines().filter(|l| l.starts_with("<polyline")).collect();
    assert_eq!(lines.len(), 3);
    for line in lines {
        let points = line.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        assert_eq!(points.split_whitespace().count(), 3, "{line}");
    }
    path
}

fn fit_writes_an_svg_of_the_curves_and_calls_back_each_epoch() {
    fit_with_a_plot("plot");
}

fn the_svg_is_well_formed_xml_by_pythons_parser() {
    let path = fit_with_a_plot("plot-xml");
    let out = support::python(
        "import sys, xml.etree.ElementTree as ET\n\
         root = ET.parse(sys.argv[1]).getroot()\n\
         print(root.tag, len(root.findall('{http://www.w3.org/2000/svg}polyline')))",
        &[path.to_str().unwrap()],
    );
    assert_eq!(out.trim(), "{http://www.w3.org/2000/svg}svg 3");
}

fn fit_refuses_bad_inputs_before_any_step() {
    let data = blobs();
    let mut model = Pair::new(&Device::cpu()).unwrap();
    let before = model.params().unwrap();
    let quiet = || FitOptions::new().progress(false);
    assert!(matches!(
        model.fit_with(&data, &[0.1, f32::NAN], 0, quiet()),
        Err(tensorbridge::Error::InvalidLearningRate { .. })
    ));
    let empty = Dataset::new(DMatrix::zeros(0, 2), vec![]).unwrap();
    assert!(matches!(model.fit_with(&empty, &[0.1], 0, quiet()), Err(tensorbridge::Error::EmptyDataset { .. })));
    let three = Dataset::new(DMatrix::zeros(2, 3), vec![0, 1]).unwrap();
    assert!(matches!(model.fit_with(&three, &[0.1], 0, quiet()), Err(tensorbridge::Error::ShapeMismatch { .. })));
    assert_eq!(model.params().unwrap(), before, "nothing was trained");
    // No learning rates: no epochs, nothing changes.
    assert!(model.fit_with(&data, &[], 0, quiet()).unwrap().epochs.is_empty());
    assert_eq!(model.params().unwrap(), before);
}

fn fit_keeps_the_callers_pending_deferred_losses() {
    let data = blobs();
    let mut model = Pair::new(&Device::cpu()).unwrap();
    let x = tensorbridge::matrix![-1.0, -1.0; 1.0, 1.0; -1.0, -0.9; 0.9, 1.0];
    let y = tensorbridge::vector![0u32, 1, 0, 1];
    let mine = [model.loss(&x, &y).unwrap()];
    model.train_step_deferred(&x, &y, 0.1).unwrap();
    let history = model.fit(&data, &[0.5, 0.2], 3).unwrap();
    assert_eq!(history.epochs.len(), 2);
    // The step before `fit` is still pending, with its loss, and nothing of fit's is.
    assert_eq!(model.take_losses().unwrap(), mine);
    assert!(model.take_losses().unwrap().is_empty());
}

crate::tests! {
    plain fit_writes_an_svg_of_the_curves_and_calls_back_each_epoch,
    numpy the_svg_is_well_formed_xml_by_pythons_parser,
    plain fit_refuses_bad_inputs_before_any_step,
    plain fit_keeps_the_callers_pending_deferred_losses,
}
