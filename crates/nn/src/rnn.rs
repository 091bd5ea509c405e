//! GRU and LSTM layers with PyTorch's gate layout, run over left-padded
//! batches, with hand-derived backward passes.
//!
//! The input projection of every step is one matrix product over the whole
//! `[B * L, D]` sequence; only the recurrent product runs per step. Weight
//! gradients are likewise two products over the whole sequence after the
//! backward pass through time.

use crate::linalg::{add_bias, add_col_sums, matmul, Mat};
use crate::params::{Params, Slot};
use crate::simd::{self, avx512_dispatch, pack_panels, small_gemm, Parts, Raw, Shared};
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
    /// LSTM: the cell state after the last step, `[B, H]`.
    cell: Vec<f32>,
    /// Recurrent projections of one step, `[B, G*H]`.
    gh: Vec<f32>,
    /// `W_hh` packed for the recurrent products, by unit part: forward the
    /// columns of `W_hh^T` (gate by gate), backward the columns of `W_hh`.
    packed: Vec<f32>,
    /// Gradient buffers `[B, L, G*H]` for the input and recurrent products
    /// (the LSTM uses `dgx` for both).
    dgx: Vec<f32>,
    dgh: Vec<f32>,
    /// The hidden-state gradient of the current step, `[B, H]`.
    dh: Vec<f32>,
    /// LSTM: the cell-state gradient of the current step, `[B, H]`.
    dc: Vec<f32>,
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
    ///
    /// Each step's recurrent product and cell update are split over threads
    /// by hidden unit: a thread computes the gate columns of its units and
    /// updates those units, so every value is computed the same way
    /// whatever the number of threads.
    pub(crate) fn forward(
        &self,
        p: &Params,
        batch: &Batch<'_>,
        c: &mut RnnCache,
        out: &mut Vec<f32>,
    ) {
        let (b, l, d, h) = (batch.rows(), batch.len, batch.dim, self.hidden);
        let gn = self.cell.gates();
        let g = gn * h;
        let lstm = self.cell == Cell::Lstm;
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
        c.packed.resize(h * g, 0.0);
        if lstm {
            c.cprev.resize(b * l * h, 0.0);
            c.cell.resize(b * h, 0.0);
        }
        out.clear();
        out.resize(b * h, 0.0);
        // h_0 = c_0 = 0 up to the first real step.
        let t0 = batch.first_real_step();
        for i in 0..b {
            let zero = (i * l) * h..(i * l + t0 + 1) * h;
            c.hprev[zero.clone()].fill(0.0);
            if lstm {
                c.cprev[zero].fill(0.0);
            }
        }
        let (whh, bhh) = (p.at(self.whh), p.at(self.bhh));
        let wt = Shared::new(&mut c.packed);
        let parts = Parts::new(h);
        parts.run(|u| {
            for gi in 0..gn {
                // SAFETY: this part's region of the packed buffer.
                let dst = unsafe { wt.span(packed_at(gi, h, h, u.start), h * u.len()) };
                pack_panels(dst, h, u.len(), |p, j| whh[(gi * h + u.start + j) * h + p]);
            }
        });
        let sh = Shared::new(&mut c.hprev);
        let sc = Shared::new(&mut c.cprev);
        let (sgates, saux, sgh) = (
            Shared::new(&mut c.gates),
            Shared::new(&mut c.aux),
            Shared::new(&mut c.gh),
        );
        let (sout, scell) = (Shared::new(out), Shared::new(&mut c.cell));
        for t in t0..l {
            parts.run(|u| {
                let w = u.len();
                for gi in 0..gn {
                    // SAFETY: reads the hidden states of step t (no thread
                    // writes them during this step) and W_hh^T; writes the
                    // gate columns of this part's units.
                    unsafe {
                        small_gemm(
                            b,
                            w,
                            h,
                            Raw {
                                ptr: sh.ptr().add(t * h),
                                stride: l * h,
                            },
                            wt.ptr().add(packed_at(gi, h, h, u.start)),
                            Raw {
                                ptr: sgh.ptr().add(gi * h + u.start),
                                stride: g,
                            },
                            false,
                        )
                    };
                }
                for i in 0..b {
                    let st = (i * l + t) * h + u.start;
                    let at = (i * l + t) * g + u.start;
                    // SAFETY: every span below is this part's units of row
                    // i: rows of step t (read) and of step t + 1 or the
                    // output (written); no other thread touches them.
                    unsafe {
                        let (hp, next) = if t + 1 < l {
                            (&*sh.span(st, w), sh.span(st + h, w))
                        } else {
                            (&*sh.span(st, w), sout.span(i * h + u.start, w))
                        };
                        let (cp, cnext) = if !lstm {
                            (&[][..], &mut [][..])
                        } else if t + 1 < l {
                            (&*sc.span(st, w), sc.span(st + h, w))
                        } else {
                            (&*sc.span(st, w), scell.span(i * h + u.start, w))
                        };
                        if !batch.is_real(i, t) {
                            next.copy_from_slice(hp);
                            cnext.copy_from_slice(cp);
                            continue;
                        }
                        let x = |k: usize| sgates.span(at + k * h, w);
                        let hh = |k: usize| &*sgh.span(i * g + k * h + u.start, w);
                        let bias = |k: usize| &bhh[k * h + u.start..k * h + u.end];
                        let aux = saux.span(st, w);
                        match self.cell {
                            Cell::Gru => gru_rows(
                                [x(0), x(1), x(2)],
                                [hh(0), hh(1), hh(2)],
                                [bias(0), bias(1), bias(2)],
                                aux,
                                hp,
                                next,
                            ),
                            Cell::Lstm => lstm_rows(
                                [x(0), x(1), x(2), x(3)],
                                [hh(0), hh(1), hh(2), hh(3)],
                                [bias(0), bias(1), bias(2), bias(3)],
                                aux,
                                cp,
                                cnext,
                                next,
                            ),
                        }
                    }
                }
            });
        }
    }

    /// Back-propagates `dout` (`[B, H]`, the gradient of the last hidden
    /// state) through time; adds the weight gradients into `grads`.
    ///
    /// Split over threads by hidden unit like [`Rnn::forward`]: at step t a
    /// thread finishes `dh_t` of its units (`direct + dG_{t+1} W_hh`) and
    /// back-propagates those units through the cell.
    pub(crate) fn backward(
        &self,
        p: &Params,
        batch: &Batch<'_>,
        c: &mut RnnCache,
        dout: &[f32],
        grads: &mut Params,
    ) {
        let (b, l, d, h) = (batch.rows(), batch.len, batch.dim, self.hidden);
        let gn = self.cell.gates();
        let g = gn * h;
        let gru = self.cell == Cell::Gru;
        c.dgx.resize(b * l * g, 0.0);
        c.dgh.resize(if gru { b * l * g } else { 0 }, 0.0);
        let t0 = batch.first_real_step();
        for i in 0..b {
            c.dgx[i * l * g..(i * l + t0) * g].fill(0.0);
            if gru {
                c.dgh[i * l * g..(i * l + t0) * g].fill(0.0);
            }
        }
        c.dh.clear();
        c.dh.extend_from_slice(dout);
        c.dc.clear();
        c.dc.resize(if gru { 0 } else { b * h }, 0.0);
        let whh = p.at(self.whh);
        c.packed.resize(g * h, 0.0);
        let packed = Shared::new(&mut c.packed);
        let parts = Parts::new(h);
        let (sdgx, sdgh) = (Shared::new(&mut c.dgx), Shared::new(&mut c.dgh));
        let rec = if gru { sdgh } else { sdgx };
        let (sdh, sdc) = (Shared::new(&mut c.dh), Shared::new(&mut c.dc));
        let (gates, aux, hprev, cprev) = (&c.gates, &c.aux, &c.hprev, &c.cprev);
        for t in (t0..l).rev() {
            parts.run(|u| {
                let w = u.len();
                // SAFETY: this part's region of the packed buffer.
                let pw = unsafe { packed.span(u.start * g, g * w) };
                if t + 1 == l {
                    pack_panels(pw, g, w, |p, j| whh[p * h + u.start + j]);
                } else {
                    // SAFETY: reads the recurrent gradients of step t + 1
                    // (no thread writes them during this step) and adds
                    // into this part's columns of dh.
                    unsafe {
                        small_gemm(
                            b,
                            w,
                            g,
                            Raw {
                                ptr: rec.ptr().add((t + 1) * g),
                                stride: l * g,
                            },
                            pw.as_ptr(),
                            Raw {
                                ptr: sdh.ptr().add(u.start),
                                stride: h,
                            },
                            true,
                        )
                    };
                }
                for i in 0..b {
                    let st = (i * l + t) * h + u.start;
                    let at = (i * l + t) * g + u.start;
                    // SAFETY: the spans written are this part's units of
                    // row i (dh, dc) and of row (i, t) (gate gradients).
                    unsafe {
                        let dgx = |k: usize| sdgx.span(at + k * h, w);
                        let dgh = |k: usize| sdgh.span(at + k * h, w);
                        if !batch.is_real(i, t) {
                            for k in 0..gn {
                                dgx(k).fill(0.0);
                                if gru {
                                    dgh(k).fill(0.0);
                                }
                            }
                            continue;
                        }
                        let gate = |k: usize| &gates[at + k * h..at + k * h + w];
                        let dh = sdh.span(i * h + u.start, w);
                        match self.cell {
                            Cell::Gru => gru_rows_back(
                                [gate(0), gate(1), gate(2)],
                                &aux[st..st + w],
                                &hprev[st..st + w],
                                dh,
                                [dgx(0), dgx(1), dgx(2)],
                                [dgh(0), dgh(1), dgh(2)],
                            ),
                            Cell::Lstm => lstm_rows_back(
                                [gate(0), gate(1), gate(2), gate(3)],
                                &aux[st..st + w],
                                &cprev[st..st + w],
                                sdc.span(i * h + u.start, w),
                                dh,
                                [dgx(0), dgx(1), dgx(2), dgx(3)],
                            ),
                        }
                    }
                }
            });
        }
        let dgh_all = if gru { &c.dgh } else { &c.dgx };
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

/// Where the forward packing of gate `gi`, units from `u0`, starts: each
/// gate owns `h * k` floats, each part `k` per unit.
#[inline]
fn packed_at(gi: usize, h: usize, k: usize, u0: usize) -> usize {
    (gi * h + u0) * k
}

avx512_dispatch!(
    /// One GRU step of one row over a span of units. `x` holds `W_i x + b_i`
    /// (r, z, n) and becomes the activated gates; `hh` holds `W_h h` and
    /// `bias` `b_h`; `aux` receives `W_hn h + b_hn`; `next` the new state.
    fn gru_rows(
        x: [&mut [f32]; 3],
        hh: [&[f32]; 3],
        bias: [&[f32]; 3],
        aux: &mut [f32],
        hp: &[f32],
        next: &mut [f32],
    ) {
        let n = next.len();
        let [xr, xz, xn] = x;
        let (xr, xz, xn, aux, hp) = (
            &mut xr[..n],
            &mut xz[..n],
            &mut xn[..n],
            &mut aux[..n],
            &hp[..n],
        );
        let [hr, hz, hn] = hh.map(|v| &v[..n]);
        let [br, bz, bn] = bias.map(|v| &v[..n]);
        for j in 0..n {
            let r = simd::sigmoid(xr[j] + (hr[j] + br[j]));
            let z = simd::sigmoid(xz[j] + (hz[j] + bz[j]));
            let h_n = hn[j] + bn[j];
            let c = simd::tanh(xn[j] + r * h_n);
            xr[j] = r;
            xz[j] = z;
            xn[j] = c;
            aux[j] = h_n;
            next[j] = (1.0 - z) * c + z * hp[j];
        }
    }
);

avx512_dispatch!(
    /// One LSTM step of one row over a span of units (gates i, f, g, o);
    /// `cprev` is the cell state before the step, `aux` receives `tanh(c_t)`,
    /// `cnext` and `next` the new cell and hidden state.
    fn lstm_rows(
        x: [&mut [f32]; 4],
        hh: [&[f32]; 4],
        bias: [&[f32]; 4],
        aux: &mut [f32],
        cprev: &[f32],
        cnext: &mut [f32],
        next: &mut [f32],
    ) {
        let n = next.len();
        let [xi, xf, xg, xo] = x;
        let (xi, xf, xg, xo) = (&mut xi[..n], &mut xf[..n], &mut xg[..n], &mut xo[..n]);
        let (aux, cnext, cp) = (&mut aux[..n], &mut cnext[..n], &cprev[..n]);
        let [hi, hf, hg, ho] = hh.map(|v| &v[..n]);
        let [bi, bf, bg, bo] = bias.map(|v| &v[..n]);
        for j in 0..n {
            let i = simd::sigmoid(xi[j] + (hi[j] + bi[j]));
            let f = simd::sigmoid(xf[j] + (hf[j] + bf[j]));
            let g = simd::tanh(xg[j] + (hg[j] + bg[j]));
            let o = simd::sigmoid(xo[j] + (ho[j] + bo[j]));
            let c = f * cp[j] + i * g;
            let tc = simd::tanh(c);
            xi[j] = i;
            xf[j] = f;
            xg[j] = g;
            xo[j] = o;
            aux[j] = tc;
            cnext[j] = c;
            next[j] = o * tc;
        }
    }
);

avx512_dispatch!(
    /// GRU step backward over a span of units: writes the pre-activation
    /// gradients of the input and recurrent products and replaces `dh` with
    /// its direct part in `dh_{t-1}` (`dh * z`).
    fn gru_rows_back(
        gates: [&[f32]; 3],
        aux: &[f32],
        hprev: &[f32],
        dh: &mut [f32],
        dgx: [&mut [f32]; 3],
        dgh: [&mut [f32]; 3],
    ) {
        let n = dh.len();
        let [gr, gz, gc] = gates.map(|v| &v[..n]);
        let (aux, hprev) = (&aux[..n], &hprev[..n]);
        let [xr, xz, xc] = dgx;
        let (xr, xz, xc) = (&mut xr[..n], &mut xz[..n], &mut xc[..n]);
        let [hr, hz, hc] = dgh;
        let (hr, hz, hc) = (&mut hr[..n], &mut hz[..n], &mut hc[..n]);
        for j in 0..n {
            let (r, z, c) = (gr[j], gz[j], gc[j]);
            let d = dh[j];
            let dc = d * (1.0 - z) * (1.0 - c * c);
            let dz = d * (hprev[j] - c) * z * (1.0 - z);
            let dr = dc * aux[j] * r * (1.0 - r);
            xr[j] = dr;
            xz[j] = dz;
            xc[j] = dc;
            hr[j] = dr;
            hz[j] = dz;
            hc[j] = dc * r;
            dh[j] = d * z;
        }
    }
);

avx512_dispatch!(
    /// LSTM step backward over a span of units: the input and recurrent
    /// products share their pre-activation gradients (`dg`); `dc` carries
    /// the cell gradient to the step before; the direct part of `dh_{t-1}`
    /// is 0.
    fn lstm_rows_back(
        gates: [&[f32]; 4],
        aux: &[f32],
        cprev: &[f32],
        dc: &mut [f32],
        dh: &mut [f32],
        dg: [&mut [f32]; 4],
    ) {
        let n = dh.len();
        let [gi, gf, gg, go] = gates.map(|v| &v[..n]);
        let (aux, cprev, dc) = (&aux[..n], &cprev[..n], &mut dc[..n]);
        let [di, df, dgg, dgo] = dg;
        let (di, df, dgg, dgo) = (&mut di[..n], &mut df[..n], &mut dgg[..n], &mut dgo[..n]);
        for j in 0..n {
            let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
            let tc = aux[j];
            let d = dh[j];
            let dcell = dc[j] + d * o * (1.0 - tc * tc);
            di[j] = dcell * g * i * (1.0 - i);
            df[j] = dcell * cprev[j] * f * (1.0 - f);
            dgg[j] = dcell * i * (1.0 - g * g);
            dgo[j] = d * tc * o * (1.0 - o);
            dc[j] = dcell * f;
            dh[j] = 0.0;
        }
    }
);

#[cfg(test)]
mod tests {
    use crate::linalg::set_threads;
    use crate::{Batch, Model, ModelConfig, Params, QueryCache, Residual, TowerKind};

    /// Queries and gradients of a GRU or LSTM tower whose hidden units split
    /// unevenly over threads.
    fn run(kind: TowerKind, threads: usize) -> (Vec<f32>, Params) {
        let (b, l, d, h) = (7, 5, 24, 72);
        let cfg = ModelConfig {
            kind,
            dim: d,
            hidden: h,
            projection: true,
            residual: Residual::Mean,
            doc: crate::DocTower::Identity,
            layers: ModelConfig::DEFAULT_LAYERS,
            heads: ModelConfig::DEFAULT_HEADS,
        };
        let model = Model::new(cfg, 3).unwrap();
        let x: Vec<f32> = (0..b * l * d).map(|i| (i as f32 * 0.173).sin()).collect();
        let lens = [5, 1, 3, 4, 2, 5, 3];
        let batch = Batch {
            x: &x,
            lens: &lens,
            len: l,
            dim: d,
        };
        set_threads(threads);
        let mut qc = QueryCache::default();
        model.forward_queries(&batch, &mut qc);
        let dq: Vec<f32> = (0..b * d).map(|i| (i as f32 * 0.71).cos()).collect();
        let mut grads = model.params().zeros_like();
        model.backward_queries(&batch, &mut qc, &dq, &mut grads);
        set_threads(1);
        (qc.queries().to_vec(), grads)
    }

    #[test]
    fn results_do_not_depend_on_threads() {
        for kind in [TowerKind::Gru, TowerKind::Lstm] {
            let one = run(kind, 1);
            assert!(one.1.iter().all(|p| p.data.iter().any(|&v| v != 0.0)));
            for t in [2, 3, 5] {
                let other = run(kind, t);
                assert!(other.0 == one.0, "{kind} with {t} threads: queries differ");
                for (a, b) in other.1.iter().zip(one.1.iter()) {
                    assert!(a == b, "{kind} with {t} threads: {} differs", a.name);
                }
            }
        }
    }
}
