//! [`DeviceTensor`]: a host buffer's contents living on a device (the seed's `Tensor(x)`).

use std::fmt;
use std::marker::PhantomData;

use crate::backend::DeviceBuffer;
use crate::error::Result;
use crate::model::{HostTensor, StorageElement};

/// A tensor resident on a model's device, typed by the host buffer it mirrors (for
/// example `SMatrix<f32, 2, 4>`, or `SMatrix<f16, 2, 4>` for an `f16` model's batch), so
/// that a batch and logits cannot be confused.
///
/// `Send + Sync`: a tensor may be read from any thread. Made by `Engine::to_device` (host -> device) and `Engine::forward`; read back with
/// [`DeviceTensor::to_host`] (the seed's `.asnumpy()`).
pub struct DeviceTensor<T: HostTensor>
where
    T::Elem: StorageElement,
{
    pub(crate) buffer: Box<dyn DeviceBuffer>,
    _host: PhantomData<fn() -> T>,
}

impl<T: HostTensor> DeviceTensor<T>
where
    T::Elem: StorageElement,
{
    pub(crate) fn new(buffer: Box<dyn DeviceBuffer>) -> Self {
        DeviceTensor { buffer, _host: PhantomData }
    }

    /// Copies the tensor back into a host buffer. On OpenCL this waits for the kernels
    /// that produce it and costs one device -> host transfer.
    pub fn to_host(&self) -> Result<T> {
        let mut host = T::zeroed();
        self.buffer.read_into(host.as_flat_mut())?;
        Ok(host)
    }

    /// Rows and columns.
    pub fn shape(&self) -> (usize, usize) {
        (T::ROWS, T::COLS)
    }
}

impl<T: HostTensor> fmt::Debug for DeviceTensor<T>
where
    T::Elem: StorageElement,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceTensor<[{} x {}] on {}>", T::ROWS, T::COLS, self.buffer.location())
    }
}
