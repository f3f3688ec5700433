//! The int8 model's integer forward pass on an OpenCL device: `tb_int8_layers`
//! (`cl/int8.cl`), each work-item computing blocks of [`LANES`] outputs of [`ROWS`] rows in
//! vectors across the outputs; on a CPU device one launch for every layer (a work-item a
//! block of rows), elsewhere one launch a layer (the work-items across the blocks of
//! outputs). The parameters are uploaded once in the kernel's layout (weights by blocks of
//! outputs, rows padded to whole quads) and every launch's arguments set once; a call copies
//! the input operands into a buffer made for it, launches, and reads the head's `int16`
//! codes. The
//! integers are the CPU core's, bit for bit (integer arithmetic is exact; `tests/int8.rs`
//! checks it, in every form of the products the device runs).

use std::sync::{Arc, Mutex, PoisonError};

use super::cl::{Kernel, Mem, Queue};
use super::{program, ClDevice};
use crate::error::Result;
use crate::info::DeviceType;
use crate::kernels::{int8_source, kernel::tb_int8_layers as arg, Int8Layer};
use crate::quant::code_range;

/// The kernel that tells which operands `tb_int8_layers` takes, and its form of products.
const FORM: &str = "tb_int8_form";

/// Work-items of a work-group along the output blocks, at most, on a device other than a
/// CPU (the kernel returns past `fan_out`).
const GROUP: usize = 64;

/// Outputs of a work-item's block (`TB_Q_LANES` in `cl/int8.cl`, the width of its vectors
/// without the dot product, which takes 16 only): each row's operands serve this many
/// outputs.
const LANES: usize = 16;

/// Rows of a work-item's block (`TB_Q_ROWS` in `cl/int8.cl`): each load of weights serves
/// this many rows.
const ROWS: usize = 8;

/// Operands of a quad: the unit of the kernel's rows and weights (`char4`, `short4`,
/// `uchar4`).
const QUAD: usize = 4;

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

/// The operands of a call's input rows, padded to whole quads (the padding stays 0), in
/// the form the kernel takes (`tb_int8_form`): copied into a buffer made for the call.
enum Staging {
    /// The codes minus the input's zero point (`short`), without the dot product.
    Centred(Vec<i16>),
    /// The codes plus 128 (`uchar`), with it.
    Lifted(Vec<u8>),
}

/// The kernels (one for every layer, or one a layer; their arguments set) and the row
/// buffers, used by one call at a time.
struct State {
    kernels: Vec<Kernel>,
    /// The hidden layers' operands, `[rows x quads x 4]` each (the kernels' arguments name
    /// the buffer).
    _ops: Mem,
    /// The head's codes, `[rows x classes]`.
    head: Mem,
    staging: Staging,
}

/// An int8 model's parameters on an OpenCL device, and its kernels.
pub(crate) struct Int8Cl {
    device: Arc<ClDevice>,
    queue: Queue,
    /// The grid of each launch: (global, local).
    grids: Vec<([usize; 2], [usize; 2])>,
    features: usize,
    /// Operands of a padded input row.
    in_stride: usize,
    /// The input's zero point.
    z_in: i16,
    /// The form of the products (`TB_Q_MADD`: 0, 256 or 512), where the kernel takes no dot
    /// product.
    madd: Option<u32>,
    batch: usize,
    state: Mutex<State>,
    /// The parameters (weights, biases, weight sums, multipliers, shifts) and the layers'
    /// descriptions: the kernels' arguments name them, so they live as long as the kernels.
    _params: [Mem; 6],
}

/// `n` operands in whole quads.
fn quads(n: usize) -> usize {
    n.div_ceil(QUAD)
}

impl Staging {
    /// `n` zeroed operands of the kernel's form (`lifted`: bytes, else `short`s): the one
    /// place the form picks the operands' type.
    fn new(lifted: bool, n: usize) -> Staging {
        if lifted {
            Staging::Lifted(vec![0; n])
        } else {
            Staging::Centred(vec![0; n])
        }
    }

    /// A device buffer of `n` zeroed operands of the same type.
    fn zeroed(&self, context: &super::cl::Context, n: usize) -> Result<Mem> {
        match self {
            Staging::Centred(_) => Mem::from_slice(context, &vec![0i16; n]),
            Staging::Lifted(_) => Mem::from_slice(context, &vec![0u8; n]),
        }
    }
}

impl Int8Cl {
    /// Builds the program (kept by the device, keyed by its source and `options`), asks it
    /// which operands it takes (`tb_int8_form`), packs and uploads the parameters (given in
    /// the layout of [`Int8Model`](crate::quant::Int8Model)) and sets every launch's
    /// arguments. `options` is empty, or (for tests) `-D TB_Q_DOT_EMULATED` to run the
    /// packed path's arithmetic on a device without `cl_khr_integer_dot_product`, or
    /// `-D TB_Q_MADD=0|256|512` to pick the form of the products.
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
        let source = format!("#define TB_Q_ROWS {ROWS}\n#define TB_Q_LANES {LANES}\n{}", int8_source(batch));
        let program = program::build(device, &source, options, &[arg::NAME, FORM])?;
        let context = &device.context;
        let queue = Queue::new(context, device.id, false)?;
        // Which operands the kernel takes: one launch, once.
        let (lifted, madd) = {
            let form = Mem::from_slice(context, &[-1i32; 2])?;
            let mut kernel = Kernel::new(&program, FORM)?;
            kernel.set_mem(0, &form)?;
            queue.launch(&kernel, &[1], &[1])?;
            let mut out = [0i32; 2];
            queue.read(&form, 0, &mut out)?;
            (out[0] == 1, out[1] as u32)
        };
        let cpu = device.info.device_type == DeviceType::Cpu;
        let layers = dims.len().saturating_sub(1);
        let rows = batch.next_multiple_of(ROWS);
        // Weights by blocks of `LANES` outputs, zero past fan_in and fan_out: with the dot
        // product, by quad of inputs, then output (a `char4` each); without it, by pair of
        // inputs, then output, then input (a `char2` each). The sums of each channel's
        // codes.
        let (mut packed, mut wsum) = (Vec::new(), Vec::new());
        for (l, layer) in layer_weights(dims, weights).enumerate() {
            let (fan_in, fan_out) = (dims[l], dims[l + 1]);
            let code = |o: usize, i: usize| if o < fan_out && i < fan_in { layer[o * fan_in + i] } else { 0 };
            for b in 0..fan_out.div_ceil(LANES) {
                let outputs = b * LANES..(b + 1) * LANES;
                for q in 0..quads(fan_in) {
                    if lifted {
                        for o in outputs.clone() {
                            packed.extend((q * QUAD..(q + 1) * QUAD).map(|i| code(o, i)));
                        }
                    } else {
                        for pair in [q * QUAD, q * QUAD + 2] {
                            packed.extend(outputs.clone().flat_map(|o| [code(o, pair), code(o, pair + 1)]));
                        }
                    }
                }
            }
            wsum.extend(layer.chunks_exact(fan_in).map(|column| column.iter().map(|&v| i32::from(v)).sum::<i32>()));
        }
        let weights = Mem::from_slice(context, &packed)?;
        let (biases, wsum) = (Mem::from_slice(context, biases)?, Mem::from_slice(context, &wsum)?);
        let (multipliers, shifts) = (Mem::from_slice(context, multipliers)?, Mem::from_slice(context, shifts)?);
        let features = dims.first().copied().unwrap_or(1);
        let classes = dims.last().copied().unwrap_or(1);
        let in_stride = quads(features) * QUAD;
        // Every layer's description, and where each hidden layer's operands start in `ops`.
        let (mut meta, mut at, mut w_off, mut c_off) = (Vec::new(), 0usize, 0usize, 0usize);
        for l in 0..layers {
            let (fan_in, fan_out) = (dims[l], dims[l + 1]);
            let head = l + 1 == layers;
            let z_out = i32::from(zeros[l + 1]);
            let (lo, hi) = if head { code_range(l + 1, dims.len()) } else { (z_out, 127) };
            // The input's operands are a buffer of their own; each hidden layer's follow
            // one another in `ops`.
            let input = if l == 0 { 0 } else { at };
            if l > 0 {
                at += rows * quads(fan_in) * QUAD;
            }
            let layer = Int8Layer {
                input,
                output: if head { 0 } else { at },
                w_off,
                c_off,
                quads: quads(fan_in),
                fan_out,
                out_stride: quads(fan_out),
                z_in: i32::from(zeros[l]),
                z_out,
                lo,
                hi,
                head,
            };
            meta.extend(layer.values());
            w_off += fan_out.div_ceil(LANES) * quads(fan_in) * LANES;
            c_off += fan_out;
        }
        let staging = Staging::new(lifted, rows * in_stride);
        let ops = staging.zeroed(context, at.max(1))?;
        let head = Mem::from_slice(context, &vec![0i16; rows * classes])?;
        let meta = Mem::from_slice(context, &meta)?;
        let kernel = |first: usize, last: usize| -> Result<Kernel> {
            let mut kernel = Kernel::new(&program, arg::NAME)?;
            // Each call names its input's buffer (`run`); until then, one the kernel reads
            // nothing from before the call.
            kernel.set_mem(arg::INPUT, &ops)?;
            kernel.set_mem(arg::OPS, &ops)?;
            kernel.set_mem(arg::W, &weights)?;
            kernel.set_mem(arg::BIAS, &biases)?;
            kernel.set_mem(arg::WSUM, &wsum)?;
            kernel.set_mem(arg::MULT, &multipliers)?;
            kernel.set_mem(arg::SHIFT, &shifts)?;
            kernel.set_mem(arg::OUT16, &head)?;
            kernel.set_mem(arg::META, &meta)?;
            kernel.set_scalar(arg::FIRST, first as i32)?;
            kernel.set_scalar(arg::LAST, last as i32)?;
            Ok(kernel)
        };
        let (mut kernels, mut grids) = (Vec::new(), Vec::new());
        if cpu {
            // One launch: a work-item a block of rows, every layer (a CPU device's
            // vectoriser would otherwise put neighbouring work-items in the lanes of the
            // kernel's own vectors, and each launch costs as much as a small layer).
            kernels.push(kernel(0, layers)?);
            grids.push(([1, rows / ROWS], [1, 1]));
        } else {
            // A launch a layer, its work-items across the blocks of outputs.
            for l in 0..layers {
                kernels.push(kernel(l, l + 1)?);
                let blocks = dims[l + 1].div_ceil(LANES);
                let group = blocks.next_power_of_two().min(GROUP);
                grids.push(([blocks.next_multiple_of(group), rows / ROWS], [group, 1]));
            }
        }
        let state = State { kernels, _ops: ops, head, staging };
        Ok(Int8Cl {
            device: Arc::clone(device),
            queue,
            grids,
            features,
            in_stride,
            z_in: zeros.first().copied().unwrap_or(0),
            madd: (!lifted).then_some(madd),
            batch,
            state: Mutex::new(state),
            _params: [weights, biases, wsum, multipliers, shifts, meta],
        })
    }

    /// The form of the kernel's products (`TB_Q_MADD` in `cl/int8.cl`: 0 for OpenCL C's
    /// vectors alone, 256 or 512 for a CPU's `vpmaddwd`), or `None` where it takes the dot
    /// product.
    pub(crate) fn products(&self) -> Option<u32> {
        self.madd
    }

    /// The head's codes of a batch: `code(r, i)` gives the input code of row `r`, feature
    /// `i`; `out` receives `[batch x classes]` row-major (its length is
    /// `batch * classes`).
    pub(crate) fn run(&self, code: impl Fn(usize, usize) -> i8, out: &mut [i16]) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { kernels, head, staging, .. } = &mut *state;
        let z = self.z_in;
        // The input's operands go in a buffer made for the call (a copy at creation, no
        // command on the queue: on PoCL, every command costs as much as a small layer).
        let input = match staging {
            Staging::Centred(rows) => self.upload(rows, &code, |c| i16::from(c) - z)?,
            Staging::Lifted(rows) => self.upload(rows, &code, |c| (c as u8) ^ 0x80)?,
        };
        // Only the first kernel reads the input (the others start at a hidden layer).
        if let Some(first) = kernels.first_mut() {
            first.set_mem(arg::INPUT, &input)?;
        }
        for (kernel, (global, local)) in kernels.iter().zip(&self.grids) {
            self.queue.launch(kernel, global, local)?;
        }
        // Blocking: the kernels are done with `input` when it returns.
        let read = self.queue.read(head, 0, out);
        if read.is_err() {
            // Keep `input` until the kernels are done with it (the error is the caller's).
            let _ = self.queue.finish();
        }
        read
    }

    /// A buffer of the input operands of a call: `operand(code(r, i))` for input `i` of
    /// each row `r` of the batch, into `rows` (padded rows of `in_stride` operands), then
    /// copied at the buffer's creation.
    fn upload<T: Copy>(
        &self,
        rows: &mut [T],
        code: &impl Fn(usize, usize) -> i8,
        operand: impl Fn(i8) -> T,
    ) -> Result<Mem> {
        for (r, row) in rows.chunks_exact_mut(self.in_stride).take(self.batch).enumerate() {
            for (i, v) in row[..self.features].iter_mut().enumerate() {
                *v = operand(code(r, i));
            }
        }
        Mem::from_slice(&self.device.context, rows)
    }
}
