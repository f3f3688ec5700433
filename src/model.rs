//! The traits the `model!` macro implements: [`Model`] for the model, [`Params`] for its
//! parameters, and [`HostTensor`] for the statically sized host buffers.

use core::fmt::Debug;

use nalgebra::{SMatrix, Scalar};

use crate::layout::{FlatSpace, ScratchSpace};
use crate::math::activation::Activation;
use crate::math::optim::Optimizer;

/// A model declared with [`model!`](macro@crate::model): its shapes as constants and its host
/// buffer types. Implemented by the macro; user code reads the constants and types.
pub trait Model: Sized + 'static {
    /// The struct's name, for messages.
    const NAME: &'static str;
    /// Rows per batch (`batch`).
    const BATCH: usize;
    /// Features per row (`features`).
    const FEATURES: usize;
    /// Number of classes (`classes`); labels are `0..CLASSES`.
    const CLASSES: usize;
    /// Layer widths `[features, hidden..., classes]`.
    const LAYERS: &'static [usize];
    /// The activation after each hidden layer, in order (`activation:` in the
    /// declaration); a hidden layer past the list's end has [`Activation::DEFAULT`] (ReLU),
    /// and the output layer is linear. See
    /// [`after_layer`](crate::math::activation::after_layer).
    const ACTIVATIONS: &'static [Activation] = &[];
    /// The element type of the stored batch and parameters (`storage:` in the
    /// declaration): `f32` (the default) or `half::f16`. Arithmetic is `f32` either way.
    type Storage: StorageElement;
    /// A batch on the host: `SMatrix<Storage, BATCH, FEATURES>` (boxed when large, with
    /// the feature `std`; inline without it).
    type Input: HostTensor<Elem = Self::Storage>;
    /// Labels on the host: `SVector<u32, BATCH>` (boxed when large, with `std`).
    type Labels: HostTensor<Elem = u32>;
    /// Logits on the host: `SMatrix<f32, BATCH, CLASSES>` (boxed when large, with `std`).
    type Logits: HostTensor<Elem = f32>;
    /// The parameters, `<Name>Params`, stored as [`Model::Storage`].
    type Params: Params<Elem = Self::Storage>;
    /// The gradients that `gradients` returns: always `f32`. For `f32` storage
    /// this is `<Name>Params` itself; for `f16` storage it is `<Name>Grads`, the same
    /// fields in `f32`.
    type Grads: Params<Elem = f32>;
    /// The CPU core's working memory for this model
    /// ([`Scratch`](crate::layout::Scratch), sized by `model!`).
    type Scratch: ScratchSpace;
    /// The parameters as one flat `f32` array ([`FlatParams`](crate::layout::FlatParams)).
    type Flat: FlatSpace;
    /// The optimizer the model declares (`optimizer:`; [`Sgd`](crate::optim::Sgd) by
    /// default), whose value holds its hyperparameters.
    type Optimizer: Optimizer;
    /// The optimizer's moment buffers, one flat `f32` array of
    /// [`Optimizer::MOMENTS`] times the parameter count (none for SGD).
    type OptState: FlatSpace;

    /// Bytes of the parameters as the CPU core ([`Cpu`](crate::cpu::Cpu)) holds them: one
    /// `f32` each, whatever the storage type. Known at compile time, as are the two below;
    /// a [`Cpu`](crate::cpu::Cpu) is their sum plus 8 bytes (its update bound), rounded up
    /// to its alignment.
    const PARAM_BYTES: usize = core::mem::size_of::<Self::Flat>();
    /// Bytes of the optimizer as the CPU core holds it: its moment buffers (`f32`, 0 for
    /// SGD, one per parameter for momentum, two for Adam and AdamW), its step count and its
    /// hyperparameters.
    const OPTIMIZER_BYTES: usize =
        core::mem::size_of::<Self::OptState>() + core::mem::size_of::<u32>() + core::mem::size_of::<Self::Optimizer>();
    /// Bytes of the CPU core's working memory ([`Scratch`](crate::layout::Scratch)):
    /// gradients, every layer's outputs, two delta buffers, and (for `f16` storage) the batch
    /// widened to `f32`. The calls' stack comes on top (see the [`cpu`](crate::cpu) module).
    const WORK_BYTES: usize = core::mem::size_of::<Self::Scratch>();

    /// The CPU train step's product `p` of layer `layer` (0 for the first), computed with
    /// the layer's sizes as compile-time constants and register blocks of `MR x NR`;
    /// `false` when there is none for this layer, and then the caller computes it.
    /// `model!` implements it through `tensorbridge::__private::fixed_layer`; the default
    /// has none. Not a public API.
    #[cfg(feature = "parallel")]
    #[doc(hidden)]
    #[inline(always)]
    fn fixed_product<const MR: usize, const NR: usize>(layer: usize, p: Product<'_>) -> bool {
        let _ = (layer, p);
        false
    }
}

/// One product of a dense layer of `B` rows, `I` inputs and `O` outputs, all matrices
/// column-major (`W` is `I x O`, as in the flat parameter layout): what
/// [`Model::fixed_product`] computes (through the CPU backend's fixed-size kernels). Not a
/// public API.
#[cfg(feature = "parallel")]
#[doc(hidden)]
pub enum Product<'a> {
    /// `z[B x O] = act(a[B x I] · W[I x O] + b)`.
    Forward {
        /// The layer's input, `B x I`.
        a: &'a [f32],
        /// The weights, `I x O`.
        w: &'a [f32],
        /// The biases, `O`.
        bias: &'a [f32],
        /// The activation that follows.
        act: Activation,
        /// The output, `B x O`.
        z: &'a mut [f32],
    },
    /// `da[B x I] = dz[B x O] · Wᵀ`: the gradient with respect to the layer's input.
    InputGrads {
        /// dL/d(output), `B x O`.
        dz: &'a [f32],
        /// The weights, `I x O`.
        w: &'a [f32],
        /// dL/d(input), `B x I`.
        da: &'a mut [f32],
    },
    /// `gW[I x O] = aᵀ · dz` over the first `rows` rows (`scale: None`), or
    /// `gW += s · aᵀ · dz` (`scale: Some(s)`; the fused SGD update of `W` in place, with
    /// `s = -lr`).
    WeightGrads {
        /// The layer's input, `B x I`.
        a: &'a [f32],
        /// dL/d(output), `B x O`.
        dz: &'a [f32],
        /// The weight gradients, or the weights to update, `I x O`.
        gw: &'a mut [f32],
        /// The rows that count, at most `B`.
        rows: usize,
        /// `None` to set `gw`, `Some(s)` to add `s` times the product.
        scale: Option<f32>,
        /// Free memory for `aᵀ`, at least `B * I` values (else the product is refused).
        scratch: &'a mut [f32],
    },
}

/// A model's parameter set: `w0, b0, w1, b1, ...`, convertible to and from one flat
/// buffer (each matrix column-major, as nalgebra stores it, in field order).
pub trait Params: Clone + Debug + PartialEq + Send + Sync + 'static {
    /// The element type of every field (`f32` or `half::f16`).
    type Elem: StorageElement;
    /// Number of values in all layers together.
    const LEN: usize;
    /// Writes every parameter into `out`, whose length is [`Params::LEN`].
    fn write_flat(&self, out: &mut [Self::Elem]);
    /// Builds the parameters from a flat buffer of length [`Params::LEN`].
    fn from_flat(flat: &[Self::Elem]) -> Self;
    /// Calls `f(offset, values)` for every tensor in order (`w0, b0, w1, ...`), `offset`
    /// being where the tensor starts in the flat layout: the flat view without a buffer.
    fn visit_flat(&self, f: &mut dyn FnMut(usize, &[Self::Elem]));
    /// Builds the parameters from `f(k)`, the value at flat index `k`: the flat view
    /// without a buffer.
    fn from_flat_fn(f: &mut dyn FnMut(usize) -> Self::Elem) -> Self;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u32 {}
    impl Sealed for half::f16 {}
}

/// Element types of host buffers: `f32`, `u32` and `half::f16`. All of them are valid when
/// every bit is zero, which is what lets large buffers be allocated directly on the heap.
pub trait Element: Scalar + Copy + Send + Sync + sealed::Sealed {
    /// Zero.
    const ZERO: Self;
}
impl Element for f32 {
    const ZERO: Self = 0.0;
}
impl Element for u32 {
    const ZERO: Self = 0;
}
impl Element for half::f16 {
    const ZERO: Self = half::f16::ZERO;
}

/// The element types a model may store its batch and parameters in (`storage: f32` or
/// `storage: f16`): `f32` and `half::f16`. Arithmetic is always `f32`; `f16` values are
/// widened exactly on load and rounded to nearest, ties to even, on store (as
/// `half::f16::from_f32` and OpenCL's `vstore_half_rte`).
///
/// Every method is trivial for `f32` (identity), so code generic over the storage compiles
/// to the same machine code for `f32` models as before `f16` existed.
pub trait StorageElement: Element + PartialEq + Debug + Default {
    /// Whether this is `half::f16`.
    const IS_F16: bool;
    /// `"f32"` or `"f16"`, for messages.
    const NAME: &'static str;
    /// The largest finite value (`f32::MAX`, or 65504 for `f16`).
    const MAX: f32;
    /// The value as `f32` (exact).
    fn to_f32(self) -> f32;
    /// The nearest value (ties to even); beyond [`StorageElement::MAX`] it is infinite.
    fn from_f32(v: f32) -> Self;
    /// `v` rounded to this type and widened back (identity for `f32`).
    fn round_f32(v: f32) -> f32;
    /// Neither NaN nor infinite.
    fn is_finite(self) -> bool;
    /// The slice itself when the type is `f32` (no copy), else `None`.
    fn as_f32_slice(s: &[Self]) -> Option<&[f32]>;
    /// The slice itself, mutably, when the type is `f32`, else `None`.
    fn as_f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    /// The slice itself, mutably, when the type is `half::f16`, else `None`.
    fn as_f16_slice_mut(s: &mut [Self]) -> Option<&mut [half::f16]>;
    /// The little-endian bytes of the value (4 for `f32`, 2 for `f16`).
    #[cfg(feature = "std")]
    fn extend_le_bytes(self, out: &mut Vec<u8>);
    /// The value from its little-endian bytes (`bytes.len()` is the type's size).
    fn from_le_slice(bytes: &[u8]) -> Self;
}

impl StorageElement for f32 {
    const IS_F16: bool = false;
    const NAME: &'static str = "f32";
    const MAX: f32 = f32::MAX;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn round_f32(v: f32) -> f32 {
        v
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    #[inline(always)]
    fn as_f32_slice(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    #[inline(always)]
    fn as_f32_slice_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
    #[inline(always)]
    fn as_f16_slice_mut(_: &mut [Self]) -> Option<&mut [half::f16]> {
        None
    }
    #[cfg(feature = "std")]
    fn extend_le_bytes(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn from_le_slice(bytes: &[u8]) -> Self {
        let mut b = [0u8; 4];
        b.copy_from_slice(&bytes[..4]);
        f32::from_le_bytes(b)
    }
}

impl StorageElement for half::f16 {
    const IS_F16: bool = true;
    const NAME: &'static str = "f16";
    const MAX: f32 = 65504.0;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
    #[inline(always)]
    fn round_f32(v: f32) -> f32 {
        half::f16::from_f32(v).to_f32()
    }
    #[inline(always)]
    fn is_finite(self) -> bool {
        half::f16::is_finite(self)
    }
    #[inline(always)]
    fn as_f32_slice(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline(always)]
    fn as_f32_slice_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    #[inline(always)]
    fn as_f16_slice_mut(s: &mut [Self]) -> Option<&mut [half::f16]> {
        Some(s)
    }
    #[cfg(feature = "std")]
    fn extend_le_bytes(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn from_le_slice(bytes: &[u8]) -> Self {
        half::f16::from_le_bytes([bytes[0], bytes[1]])
    }
}

/// A statically sized host buffer (`SMatrix`, or `Box<SMatrix>` when large) seen as one
/// flat column-major slice.
pub trait HostTensor: Clone + Send + Sync + 'static {
    /// Element type.
    type Elem: Element;
    /// Rows.
    const ROWS: usize;
    /// Columns.
    const COLS: usize;
    /// The elements, column-major (nalgebra's order).
    fn as_flat(&self) -> &[Self::Elem];
    /// The elements, column-major, mutably.
    fn as_flat_mut(&mut self) -> &mut [Self::Elem];
    /// A buffer of zeros (allocated directly on the heap when boxed).
    fn zeroed() -> Self;
    /// Builds the buffer from `ROWS * COLS` column-major elements.
    ///
    /// # Panics
    /// If `flat.len() != ROWS * COLS`: a bug in the caller, never caused by user data
    /// (every caller inside tensorbridge passes a buffer sized from the same constants).
    fn from_flat(flat: &[Self::Elem]) -> Self;
    /// Builds the buffer from `f(k)`, the value at column-major index `k`.
    fn from_fn(f: impl FnMut(usize) -> Self::Elem) -> Self;
}

impl<T: Element, const R: usize, const C: usize> HostTensor for SMatrix<T, R, C> {
    type Elem = T;
    const ROWS: usize = R;
    const COLS: usize = C;
    fn as_flat(&self) -> &[T] {
        self.as_slice()
    }
    fn as_flat_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
    fn zeroed() -> Self {
        SMatrix::from_element(T::ZERO)
    }
    fn from_flat(flat: &[T]) -> Self {
        SMatrix::from_column_slice(flat)
    }
    fn from_fn(mut f: impl FnMut(usize) -> T) -> Self {
        SMatrix::from_fn(|r, c| f(c * R + r))
    }
}

#[cfg(feature = "std")]
impl<T: Element, const R: usize, const C: usize> HostTensor for Box<SMatrix<T, R, C>> {
    type Elem = T;
    const ROWS: usize = R;
    const COLS: usize = C;
    fn as_flat(&self) -> &[T] {
        self.as_slice()
    }
    fn as_flat_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
    fn zeroed() -> Self {
        boxed_zeros::<T, R, C>()
    }
    fn from_flat(flat: &[T]) -> Self {
        let mut boxed = boxed_zeros::<T, R, C>();
        boxed.as_mut_slice().copy_from_slice(flat);
        boxed
    }
    fn from_fn(mut f: impl FnMut(usize) -> T) -> Self {
        let mut boxed = boxed_zeros::<T, R, C>();
        for (k, v) in boxed.as_mut_slice().iter_mut().enumerate() {
            *v = f(k);
        }
        boxed
    }
}

/// A zeroed `SMatrix` allocated directly on the heap, never on the stack (a 1024 x 1024
/// matrix is 4 MiB: more than a test thread's whole stack).
#[cfg(feature = "std")]
pub fn boxed_zeros<T: Element, const R: usize, const C: usize>() -> Box<SMatrix<T, R, C>> {
    // SAFETY: `SMatrix<T, R, C>` is a `#[repr(C)]` array of `R * C` values of `T`, and every
    // `Element` (f32, u32, f16) is a plain number for which all-zero bits are a valid value.
    unsafe { alloc_zeroed_box() }
}

/// A zeroed [`ZeroBuffer`](crate::layout::ZeroBuffer) (a model's CPU scratch or flat parameters) allocated directly on
/// the heap.
#[cfg(feature = "std")]
pub(crate) fn boxed_buffer<B: crate::layout::ZeroBuffer>() -> Box<B> {
    // SAFETY: the only `ZeroBuffer`s (the trait is sealed) are `Scratch` and `FlatParams`,
    // `#[repr(C)]` structs of `f32` arrays, for which all-zero bits are valid (0.0).
    unsafe { alloc_zeroed_box() }
}

/// A `Box<T>` of zeroed memory, allocated without a temporary on the stack.
///
/// # Safety
/// All-zero bits must be a valid value of `T`.
#[cfg(feature = "std")]
unsafe fn alloc_zeroed_box<T>() -> Box<T> {
    let layout = std::alloc::Layout::new::<T>();
    if layout.size() == 0 {
        // SAFETY: for a zero-sized type, a dangling, well-aligned, non-null pointer is a
        // valid `Box` (it is never dereferenced for data nor deallocated). A temporary value
        // is avoided on purpose: in debug builds its stack slot would exist in this frame.
        return unsafe { Box::from_raw(std::ptr::NonNull::<T>::dangling().as_ptr()) };
    }
    // SAFETY: `layout` has a non-zero size (checked above), as `alloc_zeroed` requires.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` is non-null, was allocated by the global allocator with the layout of
    // `T` (as `Box` requires), and points to zeroed memory, which the caller guarantees is
    // a valid `T`; nobody else owns it.
    unsafe { Box::from_raw(ptr) }
}
