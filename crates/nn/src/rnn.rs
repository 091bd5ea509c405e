//! GRU and LSTM layers with PyTorch's gate layout, run over left-padded
//! batches, with hand-derived backward passes.
//!
//! The input projection of every step is one matrix product over the whole
//! `[B * L, D]` sequence; only the recurrent product runs per step. Weight
//! gradients are likewise two products over the whole sequence after the
//! backward pass through time.

use crate::linalg::{add_bias, add_col_sums, matmul, sigmoid, Mat};
use crate::params::{Params, Slot};
use crate::Batch;

/// Which recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cell {
    Gru,
    Lstm,
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Gru => 3,
            Cell::Lstm => 4,
        }
    }
}

/// The slots of one recurrent layer's weights.
#[derive(Debug, Clone)]
pub(crate) struct Rnn {
    pub(crate) cell: Cell,
    pub(crate) hidden: usize,
    wih: Slot,
    whh: Slot,
    bih: Slot,
    bhh: Slot,
}

/// What the forward pass keeps for the backward pass (buffers are reused
/// from step to step).
#[derive(Debug, Default)]
pub(crate) struct RnnCache {
    /// Input projections, `[B, L, G*H]`, turned into activated gates in place.
    gates: Vec<f32>,
    /// GRU: `W_hn h + b_hn` per step; LSTM: `tanh(c_t)`. `[B, L, H]`.
    aux: Vec<f32>,
    /// The hidden state before each step, `[B, L, H]`.
    hprev: Vec<f32>,
    /// LSTM: the cell state before each step, `[B, L, H]`.
    cprev: Vec<f32>,
    /// Recurrent projections of one step, `[B, G*H]`.
    gh: Vec<f32>,
    /// Gradient buffers `[B, L, G*H]` for the input and recurrent products.
    dgx: Vec<f32>,
    dgh: Vec<f32>,
}

impl Rnn {
    /// Adds the layer's parameters under `prefix` (`gru` or `lstm`) with
    /// PyTorch's `U(-1/sqrt(H), 1/sqrt(H))` initialisation.
    pub(crate) fn init(
        cell: Cell,
        prefix: &str,
        input: usize,
        hidden: usize,
        params: &mut Params,
        rng: &mut rand_chacha::ChaCha8Rng,
    ) -> Rnn {
        let g = cell.gates() * hidden;
        let k = 1.0 / (hidden as f32).sqrt();
        Rnn {
            cell,
            hidden,
            wih: params.uniform(&format!("{prefix}.weight_ih_l0"), &[g, input], k, rng),
            whh: params.uniform(&format!("{prefix}.weight_hh_l0"), &[g, hidden], k, rng),
            bih: params.uniform(&format!("{prefix}.bias_ih_l0"), &[g], k, rng),
            bhh: params.uniform(&format!("{prefix}.bias_hh_l0"), &[g], k, rng),
        }
    }

    /// Runs the layer; writes the last hidden state of every row into `out`
    /// (`[B, H]`).
    pub(crate) fn forward(
        &self,
        p: &Params,
        batch: &Batch<'_>,
        c: &mut RnnCache,
        out: &mut Vec<f32>,
    ) {
        let (b, l, d, h) = (batch.rows(), batch.len, batch.dim, self.hidden);
        let g = self.cell.gates() * h;
        c.gates.resize(b * l * g, 0.0);
        matmul(
            &mut c.gates,
            Mat::new(batch.x, b * l, d),
            Mat::new(p.at(self.wih), g, d).t(),
            0.0,
        );
        add_bias(&mut c.gates, p.at(self.bih));
        c.aux.resize(b * l * h, 0.0);
        c.hprev.resize(b * l * h, 0.0);
        c.gh.resize(b * g, 0.0);
        out.clear();
        out.resize(b * h, 0.0);
        let mut cell_state = match self.cell {
            Cell::Gru => Vec::new(),
            Cell::Lstm => {
                c.cprev.resize(b * l * h, 0.0);
                vec![0.0; b * h]
            }
        };
        let whh = p.at(self.whh);
        let bhh = p.at(self.bhh);
        let t0 = batch.first_real_step();
        for t in 0..l {
            for i in 0..b {
                let at = (i * l + t) * h;
                c.hprev[at..at + h].copy_from_slice(&out[i * h..(i + 1) * h]);
                if self.cell == Cell::Lstm {
                    c.cprev[at..at + h].copy_from_slice(&cell_state[i * h..(i + 1) * h]);
                }
            }
            if t < t0 {
                continue;
            }
            matmul(&mut c.gh, Mat::new(out, b, h), Mat::new(whh, g, h).t(), 0.0);
            add_bias(&mut c.gh, bhh);
            for i in (0..b).filter(|&i| batch.is_real(i, t)) {
                let gx = &mut c.gates[(i * l + t) * g..(i * l + t + 1) * g];
                let gh = &c.gh[i * g..(i + 1) * g];
                let aux = &mut c.aux[(i * l + t) * h..(i * l + t + 1) * h];
                let hrow = &mut out[i * h..(i + 1) * h];
                match self.cell {
                    Cell::Gru => gru_step(gx, gh, aux, hrow, h),
                    Cell::Lstm => {
                        lstm_step(gx, gh, aux, hrow, &mut cell_state[i * h..(i + 1) * h], h)
                    }
                }
            }
        }
    }

    /// Back-propagates `dout` (`[B, H]`, the gradient of the last hidden
    /// state) through time; adds the weight gradients into `grads`.
    pub(crate) fn backward(
        &self,
        p: &Params,
        batch: &Batch<'_>,
        c: &mut RnnCache,
        dout: &[f32],
        grads: &mut Params,
    ) {
        let (b, l, d, h) = (batch.rows(), batch.len, batch.dim, self.hidden);
        let g = self.cell.gates() * h;
        c.dgx.clear();
        c.dgx.resize(b * l * g, 0.0);
        c.dgh.clear();
        c.dgh.resize(b * l * g, 0.0);
        let mut dh = dout.to_vec();
        let mut dc = match self.cell {
            Cell::Gru => Vec::new(),
            Cell::Lstm => vec![0.0; b * h],
        };
        let mut next = vec![0.0; b * h];
        let whh = p.at(self.whh);
        for t in (batch.first_real_step()..l).rev() {
            next.copy_from_slice(&dh);
            for i in (0..b).filter(|&i| batch.is_real(i, t)) {
                let at = (i * l + t) * g;
                let st = (i * l + t) * h;
                let rows = StepRows {
                    gates: &c.gates[at..at + g],
                    aux: &c.aux[st..st + h],
                    hprev: &c.hprev[st..st + h],
                    dh: &dh[i * h..(i + 1) * h],
                };
                let (dgx, dgh) = (&mut c.dgx[at..at + g], &mut c.dgh[at..at + g]);
                let direct = &mut next[i * h..(i + 1) * h];
                match self.cell {
                    Cell::Gru => gru_step_back(&rows, dgx, dgh, direct, h),
                    Cell::Lstm => lstm_step_back(
                        &rows,
                        &c.cprev[st..st + h],
                        &mut dc[i * h..(i + 1) * h],
                        dgx,
                        direct,
                        h,
                    ),
                }
            }
            // dh_{t-1} = direct part + dG_h(t) W_hh; rows not real at t have
            // dG_h = 0 and keep their gradient.
            let dgh_t = if self.cell == Cell::Gru {
                &c.dgh
            } else {
                &c.dgx
            };
            matmul(
                &mut next,
                Mat::strided(&dgh_t[t * g..], b, g, l * g),
                Mat::new(whh, g, h),
                1.0,
            );
            std::mem::swap(&mut dh, &mut next);
        }
        let dgh_all = if self.cell == Cell::Gru {
            &c.dgh
        } else {
            &c.dgx
        };
        matmul(
            grads.at_mut(self.whh),
            Mat::new(dgh_all, b * l, g).t(),
            Mat::new(&c.hprev, b * l, h),
            1.0,
        );
        add_col_sums(grads.at_mut(self.bhh), dgh_all);
        matmul(
            grads.at_mut(self.wih),
            Mat::new(&c.dgx, b * l, g).t(),
            Mat::new(batch.x, b * l, d),
            1.0,
        );
        add_col_sums(grads.at_mut(self.bih), &c.dgx);
    }
}

/// One GRU step of one row. `gx` holds `W_i x + b_i` (r, z, n) and becomes
/// the activated gates; `aux` receives `W_hn h + b_hn`; `h` is updated.
#[inline]
fn gru_step(gx: &mut [f32], gh: &[f32], aux: &mut [f32], h: &mut [f32], n: usize) {
    for j in 0..n {
        let r = sigmoid(gx[j] + gh[j]);
        let z = sigmoid(gx[n + j] + gh[n + j]);
        let hn = gh[2 * n + j];
        let c = (gx[2 * n + j] + r * hn).tanh();
        gx[j] = r;
        gx[n + j] = z;
        gx[2 * n + j] = c;
        aux[j] = hn;
        h[j] = (1.0 - z) * c + z * h[j];
    }
}

/// One LSTM step of one row (gates i, f, g, o); `aux` receives `tanh(c_t)`.
#[inline]
fn lstm_step(gx: &mut [f32], gh: &[f32], aux: &mut [f32], h: &mut [f32], c: &mut [f32], n: usize) {
    for j in 0..n {
        let i = sigmoid(gx[j] + gh[j]);
        let f = sigmoid(gx[n + j] + gh[n + j]);
        let g = (gx[2 * n + j] + gh[2 * n + j]).tanh();
        let o = sigmoid(gx[3 * n + j] + gh[3 * n + j]);
        c[j] = f * c[j] + i * g;
        let tc = c[j].tanh();
        gx[j] = i;
        gx[n + j] = f;
        gx[2 * n + j] = g;
        gx[3 * n + j] = o;
        aux[j] = tc;
        h[j] = o * tc;
    }
}

/// The cached values of one row at one step.
struct StepRows<'a> {
    gates: &'a [f32],
    aux: &'a [f32],
    hprev: &'a [f32],
    dh: &'a [f32],
}

/// GRU step backward: writes the pre-activation gradients of the input and
/// recurrent products and the direct part of `dh_{t-1}` (`dh * z`).
#[inline]
fn gru_step_back(s: &StepRows<'_>, dgx: &mut [f32], dgh: &mut [f32], direct: &mut [f32], n: usize) {
    for j in 0..n {
        let (r, z, c) = (s.gates[j], s.gates[n + j], s.gates[2 * n + j]);
        let dh = s.dh[j];
        let dc = dh * (1.0 - z) * (1.0 - c * c);
        let dz = dh * (s.hprev[j] - c) * z * (1.0 - z);
        let dr = dc * s.aux[j] * r * (1.0 - r);
        dgx[j] = dr;
        dgx[n + j] = dz;
        dgx[2 * n + j] = dc;
        dgh[j] = dr;
        dgh[n + j] = dz;
        dgh[2 * n + j] = dc * r;
        direct[j] = dh * z;
    }
}

/// LSTM step backward: the input and recurrent products share their
/// pre-activation gradients (written to `dg`); `dc` carries the cell
/// gradient to the step before.
#[inline]
fn lstm_step_back(
    s: &StepRows<'_>,
    cprev: &[f32],
    dc: &mut [f32],
    dg: &mut [f32],
    direct: &mut [f32],
    n: usize,
) {
    for j in 0..n {
        let (i, f, g, o) = (
            s.gates[j],
            s.gates[n + j],
            s.gates[2 * n + j],
            s.gates[3 * n + j],
        );
        let tc = s.aux[j];
        let dh = s.dh[j];
        let dcell = dc[j] + dh * o * (1.0 - tc * tc);
        dg[j] = dcell * g * i * (1.0 - i);
        dg[n + j] = dcell * cprev[j] * f * (1.0 - f);
        dg[2 * n + j] = dcell * i * (1.0 - g * g);
        dg[3 * n + j] = dh * tc * o * (1.0 - o);
        dc[j] = dcell * f;
        direct[j] = 0.0;
    }
}
