//! The traits the `model!` macro implements: [`Model`] for the model, [`Params`] for its
//! parameters, and [`HostTensor`] for the statically sized host buffers.

use crate::engine::Engine;
use nalgebra::{SMatrix, Scalar};

/// A model declared with [`model!`](crate::model): its shapes as constants and its host
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
    /// A batch on the host: `SMatrix<f32, BATCH, FEATURES>` (boxed when large).
    type Input: HostTensor<Elem = f32>;
    /// Labels on the host: `SVector<u32, BATCH>` (boxed when large).
    type Labels: HostTensor<Elem = u32>;
    /// Logits on the host: `SMatrix<f32, BATCH, CLASSES>` (boxed when large).
    type Logits: HostTensor<Elem = f32>;
    /// The parameters, `<Name>Params`.
    type Params: Params;

    /// The complete OpenCL C source specialised for this model.
    fn kernel_source() -> &'static str;

    /// Wraps an engine into the model struct.
    fn from_engine(engine: Engine<Self>) -> Self;
}

/// A model's parameter set: `w0, b0, w1, b1, ...`, convertible to and from one flat
/// buffer (each matrix column-major, as nalgebra stores it, in field order).
pub trait Params: Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static {
    /// Number of `f32` values in all layers together.
    const LEN: usize;
    /// Writes every parameter into `out`, whose length is [`Params::LEN`].
    fn write_flat(&self, out: &mut [f32]);
    /// Builds the parameters from a flat buffer of length [`Params::LEN`].
    fn from_flat(flat: &[f32]) -> Self;
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
}

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
}

/// A zeroed `SMatrix` allocated directly on the heap, never on the stack (a 1024 x 1024
/// matrix is 4 MiB: more than a test thread's whole stack).
pub fn boxed_zeros<T: Element, const R: usize, const C: usize>() -> Box<SMatrix<T, R, C>> {
    let layout = std::alloc::Layout::new::<SMatrix<T, R, C>>();
    if layout.size() == 0 {
        return Box::new(SMatrix::from_element(T::ZERO));
    }
    // SAFETY: `layout` has a non-zero size (checked above), as `alloc_zeroed` requires.
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<SMatrix<T, R, C>>();
    if ptr.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `ptr` is non-null, was allocated by the global allocator with the layout of
    // `SMatrix<T, R, C>` (as `Box` requires), and points to zeroed memory. `SMatrix<T, R, C>`
    // is a `#[repr(C)]` array of `R * C` values of `T`, and every `Element` (f32, u32, f16) is
    // a plain number for which all-zero bits are a valid value (0.0 or 0): the allocation is a
    // fully initialised matrix, owned by nobody else.
    unsafe { Box::from_raw(ptr) }
}
