//! The thin, panic-free layer over the OpenCL C API (through `opencl3`'s re-exports of
//! `cl3`): owned handles whose `Drop` never panics, error-code mapping, and typed info
//! queries. `opencl3`'s own wrapper types are not used because their `Drop` impls panic
//! when a release fails.

use std::ffi::{c_void, CString};
use std::ptr;
use std::sync::{Mutex, MutexGuard, PoisonError};

use opencl3::command_queue as cq;
use opencl3::context::context as ctx;
use opencl3::error_codes::error_text;
use opencl3::event as ev;
use opencl3::kernel as kn;
use opencl3::memory as mem;
use opencl3::program as pg;
use opencl3::types::{cl_command_queue, cl_context, cl_device_id, cl_event, cl_int, cl_kernel, cl_mem, cl_program};

use crate::error::{Error, Result};

/// Maps an OpenCL status code to [`Error::OpenCl`], naming the call and the code.
pub(crate) fn cl_error(call: &'static str) -> impl Fn(cl_int) -> Error {
    move |code| Error::OpenCl { call, code, name: error_text(code) }
}

/// An owned handle: released on drop, errors ignored (there is nobody to report them to,
/// and a panic in drop would abort an unwinding program).
macro_rules! handle {
    ($(#[$doc:meta])* $name:ident, $raw:ty, $release:path) => {
        $(#[$doc])*
        pub(crate) struct $name($raw);

        impl $name {
            /// The raw handle, valid while `self` lives.
            #[allow(dead_code)]
            pub(crate) fn raw(&self) -> $raw {
                self.0
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                // SAFETY: `self.0` was returned by the matching create call, this struct
                // holds the only reference it owns, and it is released exactly once.
                let _ = unsafe { $release(self.0) };
            }
        }
    };
}

handle!(
    /// A `cl_context`.
    Context, cl_context, ctx::release_context
);
/// An in-order `cl_command_queue`, and a lock that every command on it holds while it is
/// enqueued (and, for a blocking one, until it completes). OpenCL 1.2 makes these calls
/// thread-safe, but PoCL 3.1's `basic` driver, which runs commands in the thread that
/// submits them, computed wrong logits and hung when two threads used one queue at once (a
/// model's step on one thread while another read a tensor of the same queue:
/// `tests/threads.rs` on `POCL_DEVICES=basic`). Uncontended, the lock costs tens of
/// nanoseconds a command.
pub(crate) struct Queue {
    raw: cl_command_queue,
    lock: Mutex<()>,
}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: `self.raw` was returned by clCreateCommandQueue, this struct holds the only
        // reference it owns, and it is released exactly once.
        let _ = unsafe { cq::release_command_queue(self.raw) };
    }
}

handle!(
    /// A `cl_program`.
    Program, cl_program, pg::release_program
);
handle!(
    /// A `cl_kernel`. `clSetKernelArg` is not thread-safe, so the owner must hold it by
    /// `&mut` to set arguments (see [`Kernel::set_mem`] and [`Kernel::set_scalar`]).
    Kernel, cl_kernel, kn::release_kernel
);
/// A `cl_mem` buffer and its size in bytes.
pub(crate) struct Mem {
    raw: cl_mem,
    bytes: usize,
}

impl Mem {
    /// The raw handle, valid while `self` lives.
    pub(crate) fn raw(&self) -> cl_mem {
        self.raw
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: `self.raw` was returned by clCreateBuffer, this struct holds the only
        // reference it owns, and it is released exactly once.
        let _ = unsafe { mem::release_mem_object(self.raw) };
    }
}
handle!(
    /// A `cl_event`.
    Event, cl_event, ev::release_event
);

// SAFETY (all five): OpenCL 1.2 makes every API call thread-safe except `clSetKernelArg`
// (and the calls that use a kernel's arguments) on the same kernel object. Contexts,
// queues, programs, buffers and events are reference-counted objects that any thread may
// use and release.
unsafe impl Send for Context {}
unsafe impl Sync for Context {}
unsafe impl Send for Queue {}
unsafe impl Sync for Queue {}
unsafe impl Send for Program {}
unsafe impl Sync for Program {}
unsafe impl Send for Mem {}
unsafe impl Sync for Mem {}
unsafe impl Send for Event {}
unsafe impl Sync for Event {}
// SAFETY: a kernel may move between threads; it is not `Sync` because setting its
// arguments from two threads at once would race (the setters take `&mut self`).
unsafe impl Send for Kernel {}

impl Context {
    pub(crate) fn new(device: cl_device_id) -> Result<Context> {
        ctx::create_context(&[device], ptr::null(), None, ptr::null_mut())
            .map(Context)
            .map_err(cl_error("clCreateContext"))
    }
}

impl Queue {
    /// An in-order queue; with `profiling`, its events carry timestamps
    /// (`CL_QUEUE_PROFILING_ENABLE`).
    pub(crate) fn new(context: &Context, device: cl_device_id, profiling: bool) -> Result<Queue> {
        let properties = if profiling { cq::CL_QUEUE_PROFILING_ENABLE } else { 0 };
        // SAFETY: `device` belongs to `context` (the context was created for it).
        #[allow(deprecated)] // clCreateCommandQueue: the only form OpenCL 1.x devices have
        let queue = unsafe { cq::create_command_queue(context.raw(), device, properties) };
        queue.map(|raw| Queue { raw, lock: Mutex::new(()) }).map_err(cl_error("clCreateCommandQueue"))
    }

    /// The queue's lock (a poisoned one only means a panic in another thread between two
    /// calls, which leaves nothing half done).
    fn hold(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for every command of the queue.
    pub(crate) fn finish(&self) -> Result<()> {
        let _held = self.hold();
        cq::finish(self.raw).map_err(cl_error("clFinish"))
    }

    /// Sends the queued commands to the device without waiting.
    pub(crate) fn flush(&self) -> Result<()> {
        let _held = self.hold();
        cq::flush(self.raw).map_err(cl_error("clFlush"))
    }

    /// Blocking write of `data` into `buffer` at element `offset`.
    pub(crate) fn write<T: Copy>(&self, buffer: &Mem, offset: usize, data: &[T]) -> Result<()> {
        let _held = self.hold();
        buffer.check_range::<T>(offset, data.len(), "clEnqueueWriteBuffer")?;
        let size = std::mem::size_of_val(data);
        // SAFETY: the range lies inside the buffer (checked above); the write is blocking,
        // so `data` is only read during this call.
        let event = unsafe {
            cq::enqueue_write_buffer(
                self.raw,
                buffer.raw(),
                opencl3::types::CL_TRUE,
                offset * std::mem::size_of::<T>(),
                size,
                data.as_ptr().cast::<c_void>(),
                0,
                ptr::null(),
            )
        };
        event.map(Event).map(drop).map_err(cl_error("clEnqueueWriteBuffer"))
    }

    /// Non-blocking write; returns its event.
    ///
    /// # Safety
    /// `data` must stay alive and unmodified until the returned event has completed.
    pub(crate) unsafe fn write_async<T: Copy>(&self, buffer: &Mem, data: &[T]) -> Result<Event> {
        let _held = self.hold();
        buffer.check_range::<T>(0, data.len(), "clEnqueueWriteBuffer")?;
        let size = std::mem::size_of_val(data);
        // SAFETY: the range lies inside the buffer; the caller keeps `data` alive until
        // the event completes.
        let event = unsafe {
            cq::enqueue_write_buffer(
                self.raw,
                buffer.raw(),
                opencl3::types::CL_FALSE,
                0,
                size,
                data.as_ptr().cast::<c_void>(),
                0,
                ptr::null(),
            )
        };
        event.map(Event).map_err(cl_error("clEnqueueWriteBuffer"))
    }

    /// Blocking read of `out.len()` elements of `buffer` from element `offset`.
    pub(crate) fn read<T: Copy>(&self, buffer: &Mem, offset: usize, out: &mut [T]) -> Result<()> {
        let _held = self.hold();
        buffer.check_range::<T>(offset, out.len(), "clEnqueueReadBuffer")?;
        let size = std::mem::size_of_val(out);
        // SAFETY: the range lies inside the buffer (checked above); the read is blocking,
        // so `out` is written only during this call, and every bit pattern is a valid `T`
        // for the plain number types used here.
        let event = unsafe {
            cq::enqueue_read_buffer(
                self.raw,
                buffer.raw(),
                opencl3::types::CL_TRUE,
                offset * std::mem::size_of::<T>(),
                size,
                out.as_mut_ptr().cast::<c_void>(),
                0,
                ptr::null(),
            )
        };
        event.map(Event).map(drop).map_err(cl_error("clEnqueueReadBuffer"))
    }

    /// Enqueues `kernel` over `global` work-items in groups of `local` (1 or 2 dims).
    pub(crate) fn launch(&self, kernel: &Kernel, global: &[usize], local: &[usize]) -> Result<()> {
        self.launch_event(kernel, global, local).map(drop)
    }

    /// Blocking map of the whole of `buffer` for writing, its old contents discarded
    /// (`CL_MAP_WRITE_INVALIDATE_REGION`): waits for the queue's earlier commands. Unmap
    /// it with [`Queue::unmap`] before any kernel uses the buffer.
    pub(crate) fn map_write(&self, buffer: &Mem) -> Result<*mut c_void> {
        let _held = self.hold();
        let mut out: cl_mem = ptr::null_mut();
        // SAFETY: the region is the whole buffer; the map is blocking, so the pointer is
        // valid on return until the matching unmap.
        let event = unsafe {
            cq::enqueue_map_buffer(
                self.raw,
                buffer.raw(),
                opencl3::types::CL_TRUE,
                mem::CL_MAP_WRITE_INVALIDATE_REGION,
                0,
                buffer.bytes,
                &mut out,
                0,
                ptr::null(),
            )
        };
        // The map's event is released here (through `Event`'s drop): a `cl_event` never
        // released stays allocated in the implementation, one per map (PoCL 3.1: 250 bytes
        // a step on the mapped upload path, `benches/soak.rs`).
        event.map(Event).map(drop).map_err(cl_error("clEnqueueMapBuffer"))?;
        if out.is_null() {
            return Err(Error::OpenCl {
                call: "clEnqueueMapBuffer",
                code: opencl3::error_codes::CL_MAP_FAILURE,
                name: "CL_MAP_FAILURE",
            });
        }
        Ok(out.cast())
    }

    /// Unmaps `mapped` (a pointer [`Queue::map_write`] returned for `buffer`); returns
    /// the unmap's event.
    ///
    /// # Safety
    /// `mapped` must come from `map_write` on `buffer` and not have been unmapped yet; the
    /// caller must not touch it afterwards.
    pub(crate) unsafe fn unmap(&self, buffer: &Mem, mapped: *mut c_void) -> Result<Event> {
        let _held = self.hold();
        // SAFETY: as the caller guarantees.
        let event = unsafe { cq::enqueue_unmap_mem_object(self.raw, buffer.raw(), mapped, 0, ptr::null()) };
        event.map(Event).map_err(cl_error("clEnqueueUnmapMemObject"))
    }

    /// [`Queue::launch`], returning the launch's event.
    pub(crate) fn launch_event(&self, kernel: &Kernel, global: &[usize], local: &[usize]) -> Result<Event> {
        let _held = self.hold();
        debug_assert_eq!(global.len(), local.len());
        // SAFETY: `global` and `local` have `global.len()` entries; every argument of the
        // kernel was set by its owner (`Kernel::set_mem`, `set_scalar`, `set_words`) to a live buffer or scalar of the
        // declared type, and each kernel guards its own indices.
        let event = unsafe {
            cq::enqueue_nd_range_kernel(
                self.raw,
                kernel.raw(),
                global.len() as u32,
                ptr::null(),
                global.as_ptr(),
                local.as_ptr(),
                0,
                ptr::null(),
            )
        };
        event.map(Event).map_err(cl_error("clEnqueueNDRangeKernel"))
    }
}

impl Event {
    /// `(start, end)` of the command in device nanoseconds; the queue must have been made
    /// with profiling on and the command must have completed.
    pub(crate) fn times(&self) -> Result<(u64, u64)> {
        let at = |what| {
            ev::get_event_profiling_info(self.0, what).map(u64::from).map_err(cl_error("clGetEventProfilingInfo"))
        };
        Ok((at(ev::CL_PROFILING_COMMAND_START)?, at(ev::CL_PROFILING_COMMAND_END)?))
    }

    /// Waits until the command behind the event completed.
    pub(crate) fn wait(&self) -> Result<()> {
        ev::wait_for_events(&[self.0]).map_err(cl_error("clWaitForEvents"))
    }
}

impl Mem {
    /// A read-write buffer of `len` elements of `T`, uninitialised (`len` > 0).
    pub(crate) fn new<T>(context: &Context, len: usize) -> Result<Mem> {
        let bytes = len.max(1) * std::mem::size_of::<T>();
        // SAFETY: no host pointer is passed, so no host memory is aliased.
        let mem = unsafe { mem::create_buffer(context.raw(), mem::CL_MEM_READ_WRITE, bytes, ptr::null_mut()) };
        mem.map(|raw| Mem { raw, bytes }).map_err(cl_error("clCreateBuffer"))
    }

    /// A read-write buffer of `len` elements of `T` that the driver allocates in
    /// host-accessible memory (`CL_MEM_ALLOC_HOST_PTR`): on a device with host-unified
    /// memory, mapping it gives the memory the kernels read, with no copy.
    pub(crate) fn new_host<T>(context: &Context, len: usize) -> Result<Mem> {
        let bytes = len.max(1) * std::mem::size_of::<T>();
        // SAFETY: no host pointer is passed (the driver allocates), so none is aliased.
        let mem = unsafe {
            mem::create_buffer(
                context.raw(),
                mem::CL_MEM_READ_WRITE | mem::CL_MEM_ALLOC_HOST_PTR,
                bytes,
                ptr::null_mut(),
            )
        };
        mem.map(|raw| Mem { raw, bytes }).map_err(cl_error("clCreateBuffer"))
    }

    /// A read-write buffer initialised with a copy of `data` (non-empty).
    pub(crate) fn from_slice<T: Copy>(context: &Context, data: &[T]) -> Result<Mem> {
        if data.is_empty() {
            return Mem::new::<T>(context, 1);
        }
        let bytes = std::mem::size_of_val(data);
        // SAFETY: with CL_MEM_COPY_HOST_PTR the implementation copies `size_of_val(data)`
        // bytes from `data` during this call and never touches the pointer afterwards.
        let mem = unsafe {
            mem::create_buffer(
                context.raw(),
                mem::CL_MEM_READ_WRITE | mem::CL_MEM_COPY_HOST_PTR,
                bytes,
                data.as_ptr() as *mut c_void,
            )
        };
        mem.map(|raw| Mem { raw, bytes }).map_err(cl_error("clCreateBuffer"))
    }

    /// A view of `bytes` bytes of `self` from byte `origin` (`clCreateSubBuffer`), sharing
    /// its memory. `origin` must be a multiple of the device's `CL_DEVICE_MEM_BASE_ADDR_ALIGN`
    /// and the region inside `self`; else the call fails with the implementation's error.
    pub(crate) fn sub(&self, origin: usize, bytes: usize) -> Result<Mem> {
        let region = opencl3::types::cl_buffer_region { origin, size: bytes };
        // SAFETY: `region` is a `cl_buffer_region`, as `CL_BUFFER_CREATE_TYPE_REGION` says,
        // and lives for the call; `self.raw` is a live buffer. The implementation checks
        // the region against the buffer and the alignment. The sub-buffer holds its own
        // reference to the memory, released in its `Drop`.
        let raw = unsafe {
            mem::create_sub_buffer(
                self.raw,
                mem::CL_MEM_READ_WRITE,
                mem::CL_BUFFER_CREATE_TYPE_REGION,
                (&region as *const opencl3::types::cl_buffer_region).cast(),
            )
        };
        raw.map(|raw| Mem { raw, bytes }).map_err(cl_error("clCreateSubBuffer"))
    }

    /// Number of `T` elements the buffer holds.
    pub(crate) fn len<T>(&self) -> usize {
        self.bytes / std::mem::size_of::<T>().max(1)
    }

    fn check_range<T>(&self, offset: usize, len: usize, call: &'static str) -> Result<()> {
        let elem = std::mem::size_of::<T>();
        let end = offset.checked_add(len).and_then(|e| e.checked_mul(elem));
        match end {
            Some(end) if end <= self.bytes => Ok(()),
            _ => Err(Error::OpenCl { call, code: opencl3::error_codes::CL_INVALID_VALUE, name: "CL_INVALID_VALUE" }),
        }
    }
}

impl Kernel {
    pub(crate) fn new(program: &Program, name: &str) -> Result<Kernel> {
        let name = CString::new(name).map_err(|_| Error::OpenCl {
            call: "clCreateKernel",
            code: opencl3::error_codes::CL_INVALID_KERNEL_NAME,
            name: "CL_INVALID_KERNEL_NAME",
        })?;
        kn::create_kernel(program.raw(), &name).map(Kernel).map_err(cl_error("clCreateKernel"))
    }

    /// Sets argument `index` to a buffer.
    pub(crate) fn set_mem(&mut self, index: u32, buffer: &Mem) -> Result<()> {
        let raw = buffer.raw();
        // SAFETY: a `cl_mem` argument is passed as a pointer to the handle, which lives
        // for this call; the kernel retains nothing but the handle's value, and the caller
        // keeps the buffer alive while the kernel can run.
        unsafe { kn::set_kernel_arg(self.0, index, std::mem::size_of::<cl_mem>(), (&raw as *const cl_mem).cast()) }
            .map_err(cl_error("clSetKernelArg"))
    }

    /// Sets argument `index` to a scalar (`int` as `i32`, `float` as `f32`).
    pub(crate) fn set_scalar<T: Scalar>(&mut self, index: u32, value: T) -> Result<()> {
        // SAFETY: `T` is `i32` or `f32`, matching the kernel's `int`/`float` argument of
        // the same size; the value is copied during the call.
        unsafe { kn::set_kernel_arg(self.0, index, std::mem::size_of::<T>(), (&value as *const T).cast()) }
            .map_err(cl_error("clSetKernelArg"))
    }

    /// Sets argument `index`, a struct or vector of 32-bit words passed by value (such as
    /// `uint4`), to `words`.
    pub(crate) fn set_words(&mut self, index: u32, words: &[u32]) -> Result<()> {
        // SAFETY: the kernel's argument is a struct of exactly `words.len()` `uint`s, or a
        // `uintN` vector of as many (the caller passes the kernel's own size); the bytes are
        // copied during the call.
        unsafe { kn::set_kernel_arg(self.0, index, std::mem::size_of_val(words), words.as_ptr().cast()) }
            .map_err(cl_error("clSetKernelArg"))
    }

    /// `CL_KERNEL_WORK_GROUP_SIZE` on `device`: the largest work-group it can run.
    pub(crate) fn max_work_group(&self, device: cl_device_id) -> Result<usize> {
        let raw = kn::get_kernel_work_group_data(self.0, device, kn::CL_KERNEL_WORK_GROUP_SIZE)
            .map_err(cl_error("clGetKernelWorkGroupInfo"))?;
        Ok(read_usize(&raw))
    }

    /// `CL_KERNEL_LOCAL_MEM_SIZE` on `device`, in bytes.
    pub(crate) fn local_mem(&self, device: cl_device_id) -> Result<u64> {
        let raw = kn::get_kernel_work_group_data(self.0, device, kn::CL_KERNEL_LOCAL_MEM_SIZE)
            .map_err(cl_error("clGetKernelWorkGroupInfo"))?;
        Ok(read_u64(&raw))
    }
}

/// Kernel scalar argument types.
pub(crate) trait Scalar: Copy {}
impl Scalar for i32 {}
impl Scalar for f32 {}

impl Program {
    pub(crate) fn from_source(context: &Context, source: &str) -> Result<Program> {
        pg::create_program_with_source(context.raw(), &[source])
            .map(Program)
            .map_err(cl_error("clCreateProgramWithSource"))
    }

    pub(crate) fn from_binary(context: &Context, device: cl_device_id, binary: &[u8]) -> Result<Program> {
        // SAFETY: `device` belongs to `context`; one binary for one device.
        unsafe { pg::create_program_with_binary(context.raw(), &[device], &[binary]) }
            .map(Program)
            .map_err(cl_error("clCreateProgramWithBinary"))
    }

    /// Builds for `device`; on failure returns the status code and the build log.
    pub(crate) fn build(&self, device: cl_device_id, options: &str) -> std::result::Result<(), (cl_int, String)> {
        let options = CString::new(options.replace('\0', " ")).unwrap_or_default();
        pg::build_program(self.0, &[device], &options, None, ptr::null_mut()).map_err(|code| (code, self.log(device)))
    }

    /// The device compiler's log (empty when it cannot be read).
    pub(crate) fn log(&self, device: cl_device_id) -> String {
        pg::get_program_build_data(self.0, device, pg::CL_PROGRAM_BUILD_LOG)
            .map(|raw| bytes_to_string(&raw))
            .unwrap_or_default()
    }

    /// The program's binary for its single device.
    pub(crate) fn binary(&self) -> Result<Vec<u8>> {
        let info = pg::get_program_info(self.0, pg::CL_PROGRAM_BINARIES).map_err(cl_error("clGetProgramInfo"))?;
        // cl3 answers CL_PROGRAM_BINARIES with its `VecVecUchar` variant, whose conversion
        // cannot fail.
        let binaries = Vec::<Vec<u8>>::from(info);
        binaries.into_iter().next().filter(|b| !b.is_empty()).ok_or(Error::OpenCl {
            call: "clGetProgramInfo",
            code: opencl3::error_codes::CL_INVALID_PROGRAM,
            name: "CL_INVALID_PROGRAM",
        })
    }
}

/// A string from an info query's bytes (trailing NULs dropped, invalid UTF-8 replaced).
pub(crate) fn bytes_to_string(raw: &[u8]) -> String {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
    String::from_utf8_lossy(&raw[..end]).trim().to_string()
}

/// A `size_t` from an info query's bytes (0 when short).
pub(crate) fn read_usize(raw: &[u8]) -> usize {
    let mut bytes = [0u8; std::mem::size_of::<usize>()];
    let n = raw.len().min(bytes.len());
    bytes[..n].copy_from_slice(&raw[..n]);
    usize::from_ne_bytes(bytes)
}

/// A `cl_ulong`/`cl_uint`/`cl_bool` from an info query's bytes (by its length).
pub(crate) fn read_u64(raw: &[u8]) -> u64 {
    match raw.len() {
        4 => u64::from(u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]])),
        n if n >= 8 => u64::from_ne_bytes([raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7]]),
        _ => 0,
    }
}
