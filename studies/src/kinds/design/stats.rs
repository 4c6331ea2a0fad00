//! Owns the statistics of `design`: the reduction of block sums to means, standard
//! deviations, percentiles, failure probabilities, score-function sensitivities and the Fisher
//! information matrix with its eigen-decomposition, on the bins and thresholds the pilot
//! ([`super::pilot`]) fixed. Draws nothing.

use nalgebra::{DMatrix, SymmetricEigen};

use super::Params;
use super::eval::thetas;
use super::pilot::Pilot;
use super::sample::ChunkSums;
use crate::StudyError;
use crate::output::{Column, NamedArray, StudyOutput};

/// Reduces the chunks (in chunk order) to the study's output.
///
/// # Errors
/// [`StudyError::BadChunk`] when shapes or block order do not fit; [`StudyError::Numerics`]
/// when there are fewer than 2 samples.
pub fn reduce(
    params: &Params,
    pilot: &Pilot,
    chunks: &[ChunkSums],
) -> Result<StudyOutput, StudyError> {
    let th = thetas(params);
    let (o, p, bins) = (params.outputs.len(), th.len(), pilot.bins);
    let bad = |m: &str| StudyError::BadChunk(m.to_owned());
    let mut n = 0_u64;
    let (mut sy, mut syy, mut ss) = (vec![0.0; o], vec![0.0; o * o], vec![0.0; p]);
    let (mut sys, mut syys) = (vec![0.0; o * p], vec![0.0; o * o * p]);
    let (mut sfs, mut sfss) = (vec![0.0; o * p], vec![0.0; o * p]);
    let mut min = vec![f64::INFINITY; o];
    let mut max = vec![f64::NEG_INFINITY; o];
    let mut hist = vec![0_u64; o * bins];
    let (mut under, mut over, mut fails) = (vec![0_u64; o], vec![0_u64; o], vec![0_u64; o]);
    let mut next_block = 0_u64;
    for c in chunks {
        if c.first_block != next_block
            || c.min.len() != o
            || c.max.len() != o
            || c.histogram.len() != o * bins
            || c.under.len() != o
            || c.over.len() != o
            || c.failures.len() != o
        {
            return Err(bad("chunk out of order or of the wrong shape"));
        }
        next_block += c.blocks.len() as u64;
        for b in &c.blocks {
            if b.y.len() != o
                || b.yy.len() != o * o
                || b.s.len() != p
                || b.ys.len() != o * p
                || b.yys.len() != o * o * p
                || b.fs.len() != o * p
                || b.fss.len() != o * p
            {
                return Err(bad("block of the wrong shape"));
            }
            n += b.n;
            for (acc, v) in [
                (&mut sy, &b.y),
                (&mut syy, &b.yy),
                (&mut ss, &b.s),
                (&mut sys, &b.ys),
                (&mut syys, &b.yys),
                (&mut sfs, &b.fs),
                (&mut sfss, &b.fss),
            ] {
                for (a, x) in acc.iter_mut().zip(v) {
                    *a += x;
                }
            }
        }
        for a in 0..o {
            min[a] = min[a].min(c.min[a]);
            max[a] = max[a].max(c.max[a]);
            under[a] += c.under[a];
            over[a] += c.over[a];
            fails[a] += c.failures[a];
        }
        for (h, x) in hist.iter_mut().zip(&c.histogram) {
            *h += x;
        }
    }
    if n < 2 {
        return Err(StudyError::Numerics(
            "design needs at least 2 samples".into(),
        ));
    }
    let nf = n as f64;
    let mean: Vec<f64> = sy.iter().map(|v| v / nf).collect();
    let mut cov = DMatrix::<f64>::zeros(o, o);
    for a in 0..o {
        for b in 0..o {
            cov[(a, b)] = (syy[a * o + b] - nf * mean[a] * mean[b]) / (nf - 1.0);
        }
    }
    let std: Vec<f64> = (0..o).map(|a| cov[(a, a)].max(0.0).sqrt()).collect();
    let es: Vec<f64> = ss.iter().map(|v| v / nf).collect();
    // ∂μ_a/∂θ_k = E[y_a s_k] − μ_a E[s_k] and ∂Σ_ab/∂θ_k = E[(y_a−μ_a)(y_b−μ_b) s_k].
    let dmu = |a: usize, k: usize| sys[a * p + k] / nf - mean[a] * es[k];
    let dsig = |a: usize, b: usize, k: usize| {
        syys[(a.min(b) * o + a.max(b)) * p + k] / nf
            - mean[a] * sys[b * p + k] / nf
            - mean[b] * sys[a * p + k] / nf
            + mean[a] * mean[b] * es[k]
    };
    // Pseudo-inverse of Σ (outputs may be exactly dependent, e.g. |x₁| and k₁|x₁| with k₁ fixed).
    let eig = SymmetricEigen::new(cov.clone());
    let top = eig.eigenvalues.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    let mut pinv = DMatrix::<f64>::zeros(o, o);
    for (i, &lam) in eig.eigenvalues.iter().enumerate() {
        if lam > 1e-10 * top && lam > 0.0 {
            let v = eig.eigenvectors.column(i);
            pinv += (v * v.transpose()) / lam;
        }
    }
    let dsig_m: Vec<DMatrix<f64>> = (0..p)
        .map(|k| DMatrix::from_fn(o, o, |a, b| dsig(a, b, k)))
        .collect();
    let dmu_v: Vec<nalgebra::DVector<f64>> = (0..p)
        .map(|k| nalgebra::DVector::from_fn(o, |a, _| dmu(a, k)))
        .collect();
    let sd: Vec<DMatrix<f64>> = dsig_m.iter().map(|d| &pinv * d).collect();
    let mut fisher = DMatrix::<f64>::zeros(p, p);
    for j in 0..p {
        for k in 0..p {
            let mean_part = (dmu_v[j].transpose() * &pinv * &dmu_v[k])[(0, 0)];
            let cov_part = 0.5 * (&sd[j] * &sd[k]).trace();
            // Normalised by the parameter values (relative sensitivities), as Cristallo does.
            fisher[(j, k)] = th[j].value * th[k].value * (mean_part + cov_part);
        }
    }
    if fisher.iter().any(|v| !v.is_finite()) {
        return Err(StudyError::Numerics(
            "Fisher information is not finite".into(),
        ));
    }
    let fe = SymmetricEigen::new(fisher.clone());
    let mut order: Vec<usize> = (0..p).collect();
    order.sort_by(|&a, &b| fe.eigenvalues[b].total_cmp(&fe.eigenvalues[a]));
    let percentile = |a: usize, q: f64| -> f64 {
        let target = q * nf;
        let mut cum = under[a] as f64;
        if target <= cum {
            return min[a];
        }
        for b in 0..bins {
            let c = hist[a * bins + b] as f64;
            if c > 0.0 && target <= cum + c {
                let v = pilot.lower[a] + pilot.width[a] * (b as f64 + (target - cum) / c);
                return v.clamp(min[a], max[a]);
            }
            cum += c;
        }
        max[a]
    };
    let names: Vec<String> = params.outputs.iter().map(|s| s.name()).collect();
    let pf: Vec<f64> = fails.iter().map(|&f| f as f64 / nf).collect();
    let mut stats_cols: Vec<(&str, Vec<f64>)> = vec![
        ("mean", mean.clone()),
        ("std", std.clone()),
        ("min", min.clone()),
        ("p05", (0..o).map(|a| percentile(a, 0.05)).collect()),
        ("p50", (0..o).map(|a| percentile(a, 0.5)).collect()),
        ("p95", (0..o).map(|a| percentile(a, 0.95)).collect()),
        ("max", max.clone()),
        ("threshold", pilot.threshold.clone()),
        ("p_failure", pf.clone()),
        (
            "p_failure_std_error",
            pf.iter().map(|&q| (q * (1.0 - q) / nf).sqrt()).collect(),
        ),
        ("pilot_nominal", pilot.nominal.clone()),
        ("pilot_std_lin", pilot.std_lin.clone()),
    ];
    let mut arrays = vec![NamedArray {
        name: "statistics".into(),
        columns: std::iter::once(Column {
            name: "output_index".into(),
            values: (0..o).map(|a| a as f64).collect(),
        })
        .chain(stats_cols.drain(..).map(|(name, values)| Column {
            name: format!("{name}_in_output_unit"),
            values,
        }))
        .collect(),
    }];
    for a in 0..o {
        let edges: Vec<f64> = (0..bins)
            .map(|b| pilot.lower[a] + pilot.width[a] * b as f64)
            .collect();
        arrays.push(NamedArray {
            name: format!("histogram-{a}-{}", names[a].replace('_', "-")),
            columns: vec![
                Column {
                    name: "bin_lower_in_output_unit".into(),
                    values: edges.clone(),
                },
                Column {
                    name: "bin_upper_in_output_unit".into(),
                    values: edges.iter().map(|e| e + pilot.width[a]).collect(),
                },
                Column {
                    name: "count".into(),
                    values: hist[a * bins..(a + 1) * bins]
                        .iter()
                        .map(|&c| c as f64)
                        .collect(),
                },
                Column {
                    name: "density_per_output_unit".into(),
                    values: hist[a * bins..(a + 1) * bins]
                        .iter()
                        .map(|&c| c as f64 / (nf * pilot.width[a]))
                        .collect(),
                },
            ],
        });
    }
    let mut dpf = Vec::new();
    let mut dpf_se = Vec::new();
    let mut dmean = Vec::new();
    for a in 0..o {
        for k in 0..p {
            let m = sfs[a * p + k] / nf;
            dpf.push(m);
            dpf_se.push(((sfss[a * p + k] / nf - m * m).max(0.0) / nf).sqrt());
            dmean.push(dmu(a, k));
        }
    }
    arrays.push(NamedArray {
        name: "sensitivities".into(),
        columns: vec![
            Column {
                name: "output_index".into(),
                values: (0..o * p).map(|i| (i / p.max(1)) as f64).collect(),
            },
            Column {
                name: "parameter_index".into(),
                values: (0..o * p).map(|i| (i % p.max(1)) as f64).collect(),
            },
            Column {
                name: "dpf_dtheta_per_parameter_unit".into(),
                values: dpf,
            },
            Column {
                name: "dpf_dtheta_std_error".into(),
                values: dpf_se,
            },
            Column {
                name: "dmean_dtheta_output_per_parameter_unit".into(),
                values: dmean,
            },
        ],
    });
    let summary = serde_json::json!({
        "samples": n,
        "frequency_hz": params.frequency_hz,
        "outputs": names,
        "parameters": th.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
        "parameter_values": th.iter().map(|t| t.value).collect::<Vec<_>>(),
        "histogram_under": under,
        "histogram_over": over,
        "fisher_normalised": (0..p).map(|j| (0..p).map(|k| fisher[(j, k)]).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "fisher_eigenvalues": order.iter().map(|&i| fe.eigenvalues[i]).collect::<Vec<_>>(),
        "fisher_eigenvectors": order.iter().map(|&i| fe.eigenvectors.column(i).iter().copied().collect::<Vec<_>>()).collect::<Vec<_>>(),
    });
    Ok(StudyOutput::new(summary, arrays))
}
