//! The int8 model's integer forward pass on an OpenCL device: one launch of `tb_int8_layer`
//! (`cl/int8.cl`) per layer, the parameters uploaded once, the input codes in and the
//! head's `int16` codes out. The integers are the CPU core's, bit for bit (integer
//! arithmetic is exact; `tests/int8.rs` checks it).

use std::sync::{Arc, Mutex, PoisonError};

use super::cl::{Kernel, Mem, Queue};
use super::{program, ClDevice};
use crate::error::Result;
use crate::kernels::{int8_source, kernel::tb_int8_layer as arg};
use crate::quant::code_range;

/// Work-items of a work-group along the outputs, at most (the kernel returns past
/// `fan_out`).
const GROUP: usize = 64;

/// The kernel and the activation buffers, used by one call at a time.
struct State {
    kernel: Kernel,
    /// Ping-pong buffers of hidden codes, `[batch x widest]` each; the input goes into the
    /// first.
    acts: [Mem; 2],
    /// The head's codes, `[batch x classes]`.
    head: Mem,
}

/// An int8 model's parameters on an OpenCL device, and its kernel.
pub(crate) struct Int8Cl {
    queue: Queue,
    weights: Mem,
    biases: Mem,
    multipliers: Mem,
    shifts: Mem,
    dims: Vec<usize>,
    zeros: Vec<i32>,
    batch: usize,
    state: Mutex<State>,
}

impl Int8Cl {
    /// Builds the program (kept by the device, keyed by its source and `options`) and
    /// uploads the parameters, in the layout of [`Int8Model`](crate::quant::Int8Model).
    /// `options` is empty, or `-D TB_Q_DOT_EMULATED` to run the packed path's arithmetic
    /// on a device without `cl_khr_integer_dot_product` (for tests).
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
        let source = int8_source(batch);
        let program = program::build(device, &source, options, &[arg::NAME])?;
        let kernel = Kernel::new(&program, arg::NAME)?;
        let context = &device.context;
        let widest = dims.iter().copied().max().unwrap_or(1);
        let classes = dims.last().copied().unwrap_or(1);
        let state = State {
            kernel,
            acts: [Mem::new::<i8>(context, batch * widest)?, Mem::new::<i8>(context, batch * widest)?],
            head: Mem::new::<i16>(context, batch * classes)?,
        };
        Ok(Int8Cl {
            queue: Queue::new(context, device.id, false)?,
            weights: Mem::from_slice(context, weights)?,
            biases: Mem::from_slice(context, biases)?,
            multipliers: Mem::from_slice(context, multipliers)?,
            shifts: Mem::from_slice(context, shifts)?,
            dims: dims.to_vec(),
            zeros: zeros.iter().map(|&z| i32::from(z)).collect(),
            batch,
            state: Mutex::new(state),
        })
    }

    /// The head's codes of a batch: `input` holds the input codes row-major
    /// (`[batch x features]`), `out` receives `[batch x classes]` row-major.
    pub(crate) fn run(&self, input: &[i8], out: &mut [i16]) -> Result<()> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { kernel, acts, head } = &mut *state;
        self.queue.write(&acts[0], 0, input)?;
        kernel.set_mem(arg::W, &self.weights)?;
        kernel.set_mem(arg::BIAS, &self.biases)?;
        kernel.set_mem(arg::MULT, &self.multipliers)?;
        kernel.set_mem(arg::SHIFT, &self.shifts)?;
        kernel.set_mem(arg::OUT16, head)?;
        let layers = self.dims.len() - 1;
        let (mut w_off, mut c_off) = (0usize, 0usize);
        for l in 0..layers {
            let (fan_in, fan_out) = (self.dims[l], self.dims[l + 1]);
            let is_head = l + 1 == layers;
            let z_out = self.zeros[l + 1];
            let (lo, hi) = if is_head { code_range(l + 1, self.dims.len()) } else { (z_out, 127) };
            kernel.set_mem(arg::IN, &acts[l % 2])?;
            kernel.set_mem(arg::OUT8, &acts[(l + 1) % 2])?;
            for (index, value) in
                [(arg::W_OFF, w_off), (arg::C_OFF, c_off), (arg::FAN_IN, fan_in), (arg::FAN_OUT, fan_out)]
            {
                kernel.set_scalar(index, value as i32)?;
            }
            kernel.set_scalar(arg::Z_IN, self.zeros[l])?;
            kernel.set_scalar(arg::Z_OUT, z_out)?;
            kernel.set_scalar(arg::LO, lo)?;
            kernel.set_scalar(arg::HI, hi)?;
            kernel.set_scalar(arg::HEAD, i32::from(is_head))?;
            let group = fan_out.next_power_of_two().min(GROUP);
            self.queue.launch(kernel, &[fan_out.next_multiple_of(group), self.batch], &[group, 1])?;
            w_off += fan_in * fan_out;
            c_off += fan_out;
        }
        self.queue.read(head, 0, out)
    }
}
