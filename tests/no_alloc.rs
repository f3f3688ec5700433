//! The hot path allocates nothing: at the seed and iris shapes, CPU `predict`, `logits`,
//! `loss` and `train_step` make no heap allocation (a counting global allocator, counting
//! the calling thread's allocations only, proves it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use tensorbridge::nalgebra::{SMatrix, SVector};
use tensorbridge::Device;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded to `System` unchanged; the counter is a thread-local
// `Cell` with a constant initialiser, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller upholds `alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout (see `alloc`).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations `f` makes on this thread.
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

tensorbridge::model! {
    pub struct Seed { batch: 2, features: 4, classes: 2 }
}
tensorbridge::model! {
    pub struct Iris { batch: 16, features: 4, classes: 3 }
}
tensorbridge::model! {
    pub struct Iris16 { batch: 16, features: 4, classes: 3, storage: f16 }
}

macro_rules! hot_path_allocates_nothing {
    ($name:ident, $model:ident, $b:literal, $f:literal, $c:literal, $elem:ty) => {
        #[test]
        fn $name() {
            let mut model = $model::new(&Device::cpu()).unwrap();
            let x =
                SMatrix::<$elem, $b, $f>::from_fn(|r, c| <$elem>::from_f32(((r * 7 + c * 3) % 11) as f32 / 5.0 - 1.0));
            let y = SVector::<u32, $b>::from_fn(|r, _| (r % $c) as u32);
            // Warm up (first calls may set up thread pools or lazy statics).
            model.train_step(&x, &y, 0.1).unwrap();
            model.predict(&x).unwrap();
            let n = allocations(|| {
                for _ in 0..100 {
                    std::hint::black_box(model.predict(&x).unwrap());
                    std::hint::black_box(model.logits(&x).unwrap());
                    std::hint::black_box(model.loss(&x, &y).unwrap());
                    std::hint::black_box(model.train_step(&x, &y, 0.1).unwrap());
                }
            });
            assert_eq!(n, 0, "{} allocations in 100 rounds of predict, logits, loss, train_step", n);
            // The counter works: a call that does allocate is seen.
            assert!(
                allocations(|| {
                    std::hint::black_box(model.params().unwrap());
                }) <= 1
            );
            assert!(allocations(|| drop(std::hint::black_box(vec![0u8; 64]))) == 1);
        }
    };
}

trait FromF32 {
    fn from_f32(v: f32) -> Self;
}
impl FromF32 for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
}
impl FromF32 for tensorbridge::half::f16 {
    fn from_f32(v: f32) -> Self {
        tensorbridge::half::f16::from_f32(v)
    }
}

hot_path_allocates_nothing!(seed_shape, Seed, 2, 4, 2, f32);
hot_path_allocates_nothing!(iris_shape, Iris, 16, 4, 3, f32);
hot_path_allocates_nothing!(iris_shape_f16, Iris16, 16, 4, 3, tensorbridge::half::f16);
