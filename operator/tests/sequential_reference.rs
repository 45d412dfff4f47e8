//! The sequential tests against independent reference values computed with scipy by
//! `operator/tests/sequential_reference.py` (see its header to regenerate
//! `operator/tests/fixtures/sequential/reference.json`).

use serde_json::Value;
use serin::analysis::sequential::{Batch, SequentialConfig, SequentialState, SequentialVerdict, SprtConfig};

fn fixture() -> Value {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sequential/reference.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn num(value: &Value, key: &str) -> f64 {
    value[key].as_f64().unwrap_or_else(|| panic!("{key} is not a number in {value}"))
}

fn opt(value: &Value, key: &str) -> Option<f64> {
    if value[key].is_null() { None } else { Some(num(value, key)) }
}

fn assert_close(what: &str, actual: f64, expected: f64, relative: f64) {
    let tolerance = relative * expected.abs().max(1.0);
    assert!((actual - expected).abs() <= tolerance, "{what}: {actual} vs reference {expected}");
}

fn verdict(name: &str) -> SequentialVerdict {
    match name {
        "Regression" => SequentialVerdict::Regression,
        "NoRegression" => SequentialVerdict::NoRegression,
        "Continue" => SequentialVerdict::Continue,
        other => panic!("unknown verdict {other}"),
    }
}

#[test]
fn prior_grid_matches_the_generator() {
    let data = fixture();
    assert_eq!(data["prior"]["pointsPerScale"], serin::analysis::sequential::PRIOR_POINTS_PER_SCALE);
    assert_eq!(data["prior"]["scales"], serin::analysis::sequential::PRIOR_SCALES);
}

#[test]
fn two_sample_test_matches_the_reference() {
    let data = fixture();
    let cases = data["errorCases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    let mut worst_discretisation = 0.0f64;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let merged = case["merged"].as_bool().unwrap();
        let config: SequentialConfig = serde_json::from_value(case["config"].clone()).unwrap();
        let mut state = SequentialState::new();
        for b in case["batches"].as_array().unwrap() {
            let v: Vec<f64> = b.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            state.push(&Batch::new(v[0], v[1], v[2], v[3]).unwrap()).unwrap();
        }
        let evaluation = state.evaluate(&config).unwrap();
        let log_e = num(case, "logEValue");
        let (lower, upper, estimate) =
            (num(case, "ratioLower"), opt(case, "ratioUpper"), opt(case, "ratioEstimate"));
        assert_eq!(evaluation.verdict, verdict(case["verdict"].as_str().unwrap()), "{name}");
        let continuous = num(case, "logEValueContinuousPrior");
        worst_discretisation = worst_discretisation.max((evaluation.log_e_value - continuous).abs());
        assert!(
            (evaluation.log_e_value - continuous).abs() < 0.1,
            "{name}: discrete prior {} vs continuous half-normal {continuous}",
            evaluation.log_e_value
        );
        if merged {
            // More distinct shares than bins: merging may only lose evidence, a little, and
            // may only widen the interval.
            assert!(state.shares.len() < case["batches"].as_array().unwrap().len(), "{name}: bins merged");
            assert!(evaluation.log_e_value <= log_e + 1e-9, "{name}: {} > {log_e}", evaluation.log_e_value);
            assert!(log_e - evaluation.log_e_value < 0.05, "{name}: {} vs {log_e}", evaluation.log_e_value);
            assert!(
                evaluation.ratio_lower <= lower * (1.0 + 1e-9),
                "{name}: lower {}",
                evaluation.ratio_lower
            );
            let reference_upper = upper.unwrap();
            assert!(evaluation.ratio_upper.unwrap() >= reference_upper * (1.0 - 1e-9), "{name}: upper");
            assert_close(
                &format!("{name}: estimate"),
                evaluation.ratio_estimate.unwrap(),
                estimate.unwrap(),
                1e-2,
            );
            continue;
        }
        assert_close(&format!("{name}: ln E"), evaluation.log_e_value, log_e, 1e-9);
        assert_close(&format!("{name}: lower"), evaluation.ratio_lower, lower, 1e-8);
        match (evaluation.ratio_upper, upper) {
            (Some(actual), Some(expected)) => assert_close(&format!("{name}: upper"), actual, expected, 1e-8),
            (actual, expected) => assert_eq!(actual, expected, "{name}: upper"),
        }
        match (evaluation.ratio_estimate, estimate) {
            (Some(actual), Some(expected)) => {
                assert_close(&format!("{name}: estimate"), actual, expected, 1e-8)
            }
            (actual, expected) => assert_eq!(actual, expected, "{name}: estimate"),
        }
        assert_close(&format!("{name}: ln E (cheap path)"), state.log_e_value(&config).unwrap(), log_e, 1e-9);
    }
    println!("largest |ln E(discrete prior) - ln E(continuous prior)| = {worst_discretisation:.4}");
}

#[test]
fn sprt_matches_the_reference() {
    let data = fixture();
    for case in data["sprtCases"].as_array().unwrap() {
        let sprt =
            SprtConfig::new(num(case, "p0"), num(case, "p1"), num(case, "alpha"), num(case, "beta")).unwrap();
        let name = format!("SPRT p0={} p1={}", sprt.p0, sprt.p1);
        assert_close(
            &format!("{name}: A"),
            sprt.upper_threshold().unwrap(),
            num(case, "upperThreshold"),
            1e-12,
        );
        assert_close(
            &format!("{name}: B"),
            sprt.lower_threshold().unwrap(),
            num(case, "lowerThreshold"),
            1e-12,
        );
        assert_close(&format!("{name}: KL10"), sprt.kl_h1_h0().unwrap(), num(case, "klH1H0"), 1e-12);
        assert_close(&format!("{name}: KL01"), sprt.kl_h0_h1().unwrap(), num(case, "klH0H1"), 1e-12);
        assert_close(
            &format!("{name}: E1[N]"),
            sprt.expected_sample_size_h1().unwrap(),
            num(case, "expectedSampleSizeH1"),
            1e-10,
        );
        assert_close(
            &format!("{name}: E0[N]"),
            sprt.expected_sample_size_h0().unwrap(),
            num(case, "expectedSampleSizeH0"),
            1e-10,
        );
        let limit = case["fixedSampleSizeLimit"].as_u64().unwrap();
        assert_eq!(
            sprt.fixed_sample_size(limit).unwrap(),
            case["fixedSampleSize"].as_u64(),
            "{name}: fixed n"
        );
        for sample in case["llr"].as_array().unwrap() {
            let (n, x) = (num(sample, "requests"), num(sample, "failures"));
            assert_close(
                &format!("{name}: LLR({n}, {x})"),
                sprt.log_likelihood_ratio(n, x).unwrap(),
                num(sample, "logLikelihoodRatio"),
                1e-10,
            );
        }
    }
}
