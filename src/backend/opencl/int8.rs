//! The int8 model's integer forward pass on an OpenCL device: one launch of `tb_int8_layer`
//! (`cl/int8.cl`) per layer, each work-item computing one output for a block of
//! [`ROWS`] rows in 16-wide vector operations, the parameters uploaded once in the
//! kernel's layout (rows and weight columns padded to whole blocks of 16 codes) and every
//! launch's arguments set once; a call writes the input codes, launches, and reads the
//! head's `int16` codes. The integers are the CPU core's, bit for bit (integer arithmetic is
//! exact; `tests/int8.rs` checks it).

use std::sync::{Arc, Mutex, PoisonError};

use super::cl::{Kernel, Mem, Queue};
use super::{program, ClDevice};
use crate::error::Result;
use crate::kernels::{int8_source, kernel::tb_int8_layer as arg};
use crate::quant::code_range;

/// Work-items of a work-group along the outputs, at most (the kernel returns past
/// `fan_out`).
const GROUP: usize = 64;

/// Rows of a work-item's block (`TB_Q_ROWS` in `cl/int8.cl`): each weight quad loaded
/// serves this many rows.
const ROWS: usize = 8;

/// Codes of a block: the unit of the kernel's rows and weights (`char16`).
const BLOCK: usize = 16;

/// Each layer's weight codes (column by column, `w[o * fan_in + i]`, as
/// [`Int8Model`](crate::quant::Int8Model) holds them).
fn layer_weights<'a>(dims: &'a [usize], weights: &'a [i8]) -> impl Iterator<Item = &'a [i8]> + 'a {
    dims.windows(2).scan(0, move |w, pair| {
        let n = pair[0] * pair[1];
        let layer = weights.get(*w..*w + n);
        *w += n;
        layer
    })
}

/// The kernels (one a layer, its arguments set) and the row buffers, used by one call at a
/// time.
struct State {
    kernels: Vec<Kernel>,
    /// The input codes, `[rows x blocks]`.
    input: Mem,
    /// The head's codes, `[rows x classes]`.
    head: Mem,
    /// The hidden layers' codes, `[rows x blocks]` each: the kernels' arguments name them.
    _hidden: Vec<Mem>,
    /// The input codes of a call, padded (the padding stays 0).
    staging: Vec<i8>,
}

/// An int8 model's parameters on an OpenCL device, and its kernels.
pub(crate) struct Int8Cl {
    queue: Queue,
    /// The grid of each layer's launch: (global, local).
    grids: Vec<([usize; 2], [usize; 2])>,
    features: usize,
    /// Codes of a padded input row.
    in_stride: usize,
    batch: usize,
    state: Mutex<State>,
    /// The parameters (weights, biases, weight sums, multipliers, shifts): the kernels'
    /// arguments name them, so they live as long as the kernels.
    _params: [Mem; 5],
}

/// `n` codes in whole blocks.
fn blocks(n: usize) -> usize {
    n.div_ceil(BLOCK)
}

impl Int8Cl {
    /// Builds the program (kept by the device, keyed by its source and `options`), packs
    /// and uploads the parameters (given in the layout of
    /// [`Int8Model`](crate::quant::Int8Model)) and sets every launch's arguments.
    /// `options` is empty, or `-D TB_Q_DOT_EMULATED` to run the packed path's arithmetic on
    /// a device without `cl_khr_integer_dot_product` (for tests).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        device: &Arc<ClDevice>,
        dims: &[usize],
        batch: usize,
        weights: &[i8],
        biases: &[i32],
        multipliers: &[i32],
        shifts: &[u8],
        zeros: &[i16],
        options: &str,
    ) -> Result<Int8Cl> {
        let source = format!("#define TB_Q_ROWS {ROWS}\n{}", int8_source(batch));
        let program = program::build(device, &source, options, &[arg::NAME])?;
        let context = &device.context;
        let layers = dims.len().saturating_sub(1);
        let rows = batch.next_multiple_of(ROWS);
        // Weights output after output, each padded with zeros to whole blocks; the sums of
        // each channel's codes.
        let (mut packed, mut wsum) = (Vec::new(), Vec::new());
        for (l, layer) in layer_weights(dims, weights).enumerate() {
            let fan_in = dims[l];
            for column in layer.chunks_exact(fan_in) {
                packed.extend_from_slice(column);
                packed.resize(packed.len() + blocks(fan_in) * BLOCK - fan_in, 0i8);
                wsum.push(column.iter().map(|&v| i32::from(v)).sum::<i32>());
            }
        }
        let weights = Mem::from_slice(context, &packed)?;
        let (biases, wsum) = (Mem::from_slice(context, biases)?, Mem::from_slice(context, &wsum)?);
        let (multipliers, shifts) = (Mem::from_slice(context, multipliers)?, Mem::from_slice(context, shifts)?);
        // Hidden codes: a zeroed buffer per hidden layer, `[rows x blocks]`.
        let hidden = (1..layers)
            .map(|l| Mem::from_slice(context, &vec![0i8; rows * blocks(dims[l]) * BLOCK]))
            .collect::<Result<Vec<_>>>()?;
        let features = dims.first().copied().unwrap_or(1);
        let classes = dims.last().copied().unwrap_or(1);
        let input = Mem::from_slice(context, &vec![0i8; rows * blocks(features) * BLOCK])?;
        let head = Mem::from_slice(context, &vec![0i16; rows * classes])?;
        let (mut kernels, mut grids) = (Vec::new(), Vec::new());
        let (mut w_off, mut c_off) = (0usize, 0usize);
        for l in 0..layers {
            let (fan_in, fan_out) = (dims[l], dims[l + 1]);
            let is_head = l + 1 == layers;
            let z_out = i32::from(zeros[l + 1]);
            let (lo, hi) = if is_head { code_range(l + 1, dims.len()) } else { (z_out, 127) };
            let mut kernel = Kernel::new(&program, arg::NAME)?;
            kernel.set_mem(arg::IN, if l == 0 { &input } else { &hidden[l - 1] })?;
            kernel.set_mem(arg::W, &weights)?;
            kernel.set_mem(arg::BIAS, &biases)?;
            kernel.set_mem(arg::WSUM, &wsum)?;
            kernel.set_mem(arg::MULT, &multipliers)?;
            kernel.set_mem(arg::SHIFT, &shifts)?;
            // The head writes `out16`; `out8` then names a buffer it never writes.
            kernel.set_mem(arg::OUT8, if is_head { &input } else { &hidden[l] })?;
            kernel.set_mem(arg::OUT16, &head)?;
            for (index, value) in [
                (arg::W_OFF, w_off),
                (arg::C_OFF, c_off),
                (arg::BLOCKS, blocks(fan_in)),
                (arg::FAN_OUT, fan_out),
                (arg::OUT_STRIDE, blocks(fan_out) * BLOCK),
            ] {
                kernel.set_scalar(index, value as i32)?;
            }
            kernel.set_scalar(arg::Z_IN, i32::from(zeros[l]))?;
            kernel.set_scalar(arg::Z_OUT, z_out)?;
            kernel.set_scalar(arg::LO, lo)?;
            kernel.set_scalar(arg::HI, hi)?;
            kernel.set_scalar(arg::HEAD, i32::from(is_head))?;
            kernels.push(kernel);
            let group = fan_out.next_power_of_two().min(GROUP);
            grids.push(([fan_out.next_multiple_of(group), rows / ROWS], [group, 1]));
            w_off += blocks(fan_in) * fan_out;
            c_off += fan_out;
        }
        let state = State { kernels, input, head, _hidden: hidden, staging: vec![0; rows * blocks(features) * BLOCK] };
        Ok(Int8Cl {
            queue: Queue::new(context, device.id, false)?,
            grids,
            features,
            in_stride: blocks(features) * BLOCK,
            batch,
            state: Mutex::new(state),
            _params: [weights, biases, wsum, multipliers, shifts],
        })
    }

    /// The head's codes of a batch: `code(r, i)` gives the input code of row `r`, feature
    /// `i`; `out` receives `[batch x classes]` row-major (its length is
    /// `batch * classes`).
    pub(crate) fn run(&self, code: impl Fn(usize, usize) -> i8, out: &mut [i16]) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { kernels, input, head, staging, .. } = &mut *state;
        for (r, row) in staging.chunks_exact_mut(self.in_stride).take(self.batch).enumerate() {
            for (i, q) in row[..self.features].iter_mut().enumerate() {
                *q = code(r, i);
            }
        }
        self.queue.write(input, 0, staging)?;
        for (kernel, (global, local)) in kernels.iter().zip(&self.grids) {
            self.queue.launch(kernel, global, local)?;
        }
        self.queue.read(head, 0, out)
    }
}
