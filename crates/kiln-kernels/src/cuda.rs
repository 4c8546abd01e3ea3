//! The CUDA backend: Kiln's own kernels (top-level `kernels/*.cu`, embedded
//! here) compiled at run time with NVRTC for the device's compute capability
//! (once per process and architecture), launched through cudarc.
//!
//! cudarc loads the driver and NVRTC dynamically, so Kiln builds and runs
//! without CUDA; [`probe`] checks for the libraries and a device before any
//! other CUDA call (a missing library would otherwise panic inside cudarc).
//! Operations take host slices like every [`Backend`]: each call uploads its
//! operands, runs on the device and copies the results back. Keeping tensors
//! resident on the device across calls is the next step for throughput.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use crate::error::{check_pointwise_loss, check_rows, check_softmax_cross_entropy, expect_len};
use crate::{
    Activation, Backend, Conv2d, Gemm, KernelError, Optimizer, OptimizerState, Pool2d, Result,
};

/// The kernel sources, by file name.
pub const SOURCES: [(&str, &str); 3] = [
    ("gemm.cu", include_str!("../../../kernels/gemm.cu")),
    (
        "elementwise.cu",
        include_str!("../../../kernels/elementwise.cu"),
    ),
    ("conv.cu", include_str!("../../../kernels/conv.cu")),
];

/// Every kernel entry point the backend loads.
const FUNCTIONS: [&str; 16] = [
    "kiln_sgemm",
    "kiln_bias_activation",
    "kiln_channel_bias_activation",
    "kiln_activation_backward",
    "kiln_column_sums",
    "kiln_channel_sums",
    "kiln_softmax_cross_entropy",
    "kiln_sigmoid_bce",
    "kiln_mse",
    "kiln_sgd_step",
    "kiln_momentum_step",
    "kiln_adam_step",
    "kiln_im2col",
    "kiln_col2im",
    "kiln_max_pool_forward",
    "kiln_max_pool_backward",
];

fn unavailable(reason: impl Into<String>) -> KernelError {
    KernelError::CudaUnavailable {
        reason: reason.into(),
    }
}

fn cuda_error(op: &'static str) -> impl Fn(cudarc::driver::DriverError) -> KernelError {
    move |e| KernelError::Cuda {
        op,
        message: e.to_string(),
    }
}

/// Whether NVRTC (`libnvrtc.so.13`) can be loaded: enough to compile kernels.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to dlopen the library by its known names.
    catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }).unwrap_or(false)
}

/// Checks that the CUDA driver, NVRTC and at least one device are usable.
pub fn probe() -> Result<()> {
    // SAFETY: only tries to dlopen the library by its known names.
    let driver = catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() });
    if !driver.unwrap_or(false) {
        return Err(unavailable(
            "the CUDA driver library (libcuda.so) was not found: no NVIDIA driver on this machine",
        ));
    }
    if !nvrtc_available() {
        return Err(unavailable(
            "NVRTC (libnvrtc.so.13) was not found: install the CUDA 13 toolkit or \
             `pip install nvidia-cuda-nvrtc==13.0.*` and put its lib folder on LD_LIBRARY_PATH",
        ));
    }
    let count = catch_unwind(CudaContext::device_count)
        .map_err(|_| unavailable("the CUDA driver could not be initialised"))?
        .map_err(|e| unavailable(format!("the CUDA driver reports: {e}")))?;
    if count < 1 {
        return Err(unavailable("the CUDA driver sees no device"));
    }
    Ok(())
}

/// NVRTC's target for compute capability `major.minor` (`sm_90` for 9.0).
pub fn arch_for(major: i32, minor: i32) -> &'static str {
    static NAMES: OnceLock<Mutex<HashMap<(i32, i32), &'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    names
        .entry((major, minor))
        .or_insert_with(|| Box::leak(format!("sm_{major}{minor}").into_boxed_str()))
}

/// PTX for each kernel source, by file name.
pub type CompiledKernels = Arc<Vec<(&'static str, Ptx)>>;

/// Compiles every kernel source for `arch`; cached per process and architecture.
pub fn compile(arch: &'static str) -> Result<CompiledKernels> {
    static CACHE: OnceLock<Mutex<HashMap<&'static str, CompiledKernels>>> = OnceLock::new();
    if !nvrtc_available() {
        return Err(unavailable(
            "NVRTC (libnvrtc.so.13) was not found; cannot compile the CUDA kernels",
        ));
    }
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(compiled) = cache.get(arch) {
        return Ok(Arc::clone(compiled));
    }
    let mut compiled = Vec::new();
    for (name, source) in SOURCES {
        let options = CompileOptions {
            arch: Some(arch),
            name: Some(name.to_string()),
            options: vec!["--std=c++17".to_string()],
            ..Default::default()
        };
        let ptx = catch_unwind(AssertUnwindSafe(|| compile_ptx_with_opts(source, options)))
            .map_err(|_| unavailable("NVRTC could not be loaded"))?
            .map_err(|e| KernelError::KernelCompile {
                file: name,
                message: format!("{e:?}"),
            })?;
        compiled.push((name, ptx));
    }
    let compiled = Arc::new(compiled);
    cache.insert(arch, Arc::clone(&compiled));
    Ok(compiled)
}

/// Kernels on one NVIDIA GPU.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
    name: String,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("name", &self.name)
            .finish()
    }
}

/// Threads per block of the one-dimensional kernels.
const BLOCK: u32 = 256;

fn grid(n: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: ((n.div_ceil(BLOCK as usize)).clamp(1, 1 << 16) as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `(planes, height, width, size)` as the max-pool kernels take them.
fn pool_geometry(s: &Pool2d) -> (i64, i32, i32, i32) {
    (
        (s.batch * s.channels) as i64,
        s.height as i32,
        s.width as i32,
        s.size as i32,
    )
}

/// The trailing integer arguments of kiln_im2col / kiln_col2im.
fn geometry(s: &Conv2d) -> [i32; 8] {
    [
        s.in_channels as i32,
        s.height as i32,
        s.width as i32,
        s.kernel as i32,
        s.stride as i32,
        s.padding as i32,
        s.out_height() as i32,
        s.out_width() as i32,
    ]
}

fn act_code(act: Activation) -> i32 {
    match act {
        Activation::Identity => 0,
        Activation::Relu => 1,
        Activation::Tanh => 2,
        Activation::Sigmoid => 3,
    }
}

impl CudaBackend {
    /// Opens device `ordinal` and loads Kiln's kernels, compiled for it.
    pub fn new(ordinal: usize) -> Result<Self> {
        probe()?;
        let ctx = catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| unavailable("creating a CUDA context panicked"))?
            .map_err(|e| unavailable(format!("cannot open CUDA device {ordinal}: {e}")))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(cuda_error("compute_capability"))?;
        let compiled = compile(arch_for(major, minor))?;
        let mut functions = HashMap::new();
        for (_, ptx) in compiled.iter() {
            let module = ctx
                .load_module(ptx.clone())
                .map_err(cuda_error("load_module"))?;
            for name in FUNCTIONS {
                if let Ok(f) = module.load_function(name) {
                    functions.insert(name, f);
                }
            }
        }
        if let Some(missing) = FUNCTIONS.iter().find(|f| !functions.contains_key(*f)) {
            return Err(unavailable(format!(
                "kernel {missing} is missing from the compiled modules"
            )));
        }
        let stream = ctx.default_stream();
        Ok(Self {
            name: format!("cuda:{ordinal} (sm_{major}{minor})"),
            ctx,
            stream,
            functions,
        })
    }

    fn function(&self, name: &'static str) -> &CudaFunction {
        &self.functions[name]
    }

    fn upload<T: DeviceRepr>(&self, op: &'static str, host: &[T]) -> Result<CudaSlice<T>> {
        self.stream.clone_htod(host).map_err(cuda_error(op))
    }

    fn zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        op: &'static str,
        n: usize,
    ) -> Result<CudaSlice<T>> {
        self.stream
            .alloc_zeros::<T>(n.max(1))
            .map_err(cuda_error(op))
    }

    fn download<T: DeviceRepr>(
        &self,
        op: &'static str,
        device: &CudaSlice<T>,
        host: &mut [T],
    ) -> Result<()> {
        if host.is_empty() {
            return Ok(());
        }
        self.stream
            .memcpy_dtoh(&device.slice(..host.len()), host)
            .map_err(cuda_error(op))
    }

    /// A zeroed device buffer of `floats` elements; running out of device
    /// memory is a [`KernelError::Cuda`] naming the allocation.
    pub fn allocate(&self, floats: usize) -> Result<CudaSlice<f32>> {
        self.zeros::<f32>("allocate", floats)
    }

    /// The context this backend runs in (for benchmarks: events, memory).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// `C = alpha·op(A)·op(B) + beta·C` on device buffers.
    #[allow(clippy::too_many_arguments)]
    fn sgemm_on_device(
        &self,
        spec: Gemm,
        a: &cudarc::driver::CudaView<f32>,
        b: &cudarc::driver::CudaView<f32>,
        c: &mut cudarc::driver::CudaViewMut<f32>,
    ) -> Result<()> {
        let (m, n, k) = (spec.m as i32, spec.n as i32, spec.k as i32);
        let (trans_a, trans_b) = (spec.trans_a as i32, spec.trans_b as i32);
        let cfg = LaunchConfig {
            grid_dim: (spec.n.div_ceil(64) as u32, spec.m.div_ceil(64) as u32, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self.stream.launch_builder(self.function("kiln_sgemm"));
        launch
            .arg(&m)
            .arg(&n)
            .arg(&k)
            .arg(a)
            .arg(b)
            .arg(c)
            .arg(&spec.alpha)
            .arg(&spec.beta)
            .arg(&trans_a)
            .arg(&trans_b);
        // SAFETY: the argument list matches kiln_sgemm's signature and the
        // buffers hold m·k, k·n and m·n elements (checked by the callers).
        unsafe { launch.launch(cfg) }.map_err(cuda_error("gemm"))?;
        Ok(())
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn gemm(&self, spec: Gemm, a: &[f32], b: &[f32], c: &mut [f32]) -> Result<()> {
        expect_len("gemm", "A", spec.m * spec.k, a.len())?;
        expect_len("gemm", "B", spec.k * spec.n, b.len())?;
        expect_len("gemm", "C", spec.m * spec.n, c.len())?;
        if spec.m == 0 || spec.n == 0 {
            return Ok(());
        }
        let (da, db) = (self.upload("gemm", a)?, self.upload("gemm", b)?);
        let mut dc = self.upload("gemm", c)?;
        self.sgemm_on_device(spec, &da.slice(..), &db.slice(..), &mut dc.slice_mut(..))?;
        self.download("gemm", &dc, c)
    }

    fn bias_activation(&self, act: Activation, x: &mut [f32], bias: &[f32]) -> Result<()> {
        if bias.is_empty() || x.is_empty() {
            return Ok(());
        }
        check_rows("bias_activation", "x", x.len(), bias.len())?;
        let (mut dx, db) = (
            self.upload("bias_activation", x)?,
            self.upload("bias_activation", bias)?,
        );
        let (rows, cols, code) = (
            (x.len() / bias.len()) as i64,
            bias.len() as i32,
            act_code(act),
        );
        let mut launch = self
            .stream
            .launch_builder(self.function("kiln_bias_activation"));
        launch
            .arg(&mut dx)
            .arg(&db)
            .arg(&rows)
            .arg(&cols)
            .arg(&code);
        // SAFETY: matches kiln_bias_activation(float*, const float*, long long, int, int).
        unsafe { launch.launch(grid(x.len())) }.map_err(cuda_error("bias_activation"))?;
        self.download("bias_activation", &dx, x)
    }

    fn activation_backward(&self, act: Activation, y: &[f32], grad: &mut [f32]) -> Result<()> {
        expect_len("activation_backward", "grad", y.len(), grad.len())?;
        if y.is_empty() {
            return Ok(());
        }
        let (dy, mut dg) = (
            self.upload("activation_backward", y)?,
            self.upload("activation_backward", grad)?,
        );
        let (n, code) = (y.len() as i64, act_code(act));
        let mut launch = self
            .stream
            .launch_builder(self.function("kiln_activation_backward"));
        launch.arg(&dy).arg(&mut dg).arg(&n).arg(&code);
        // SAFETY: matches kiln_activation_backward(const float*, float*, long long, int).
        unsafe { launch.launch(grid(y.len())) }.map_err(cuda_error("activation_backward"))?;
        self.download("activation_backward", &dg, grad)
    }

    fn column_sums(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        check_rows("column_sums", "x", x.len(), out.len())?;
        let dx = self.upload("column_sums", x)?;
        let mut dout = self.zeros::<f32>("column_sums", out.len())?;
        let (rows, cols) = ((x.len() / out.len()) as i64, out.len() as i32);
        let cfg = LaunchConfig {
            grid_dim: (out.len() as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self
            .stream
            .launch_builder(self.function("kiln_column_sums"));
        launch.arg(&dx).arg(&mut dout).arg(&rows).arg(&cols);
        // SAFETY: matches kiln_column_sums(const float*, float*, long long, int); 256 threads
        // fill its 256-entry shared array.
        unsafe { launch.launch(cfg) }.map_err(cuda_error("column_sums"))?;
        self.download("column_sums", &dout, out)
    }

    fn softmax_cross_entropy(
        &self,
        logits: &[f32],
        labels: &[u32],
        classes: usize,
        grad: &mut [f32],
    ) -> Result<f32> {
        check_softmax_cross_entropy(labels, classes, logits.len(), grad.len())?;
        let rows = labels.len();
        if rows == 0 {
            return Ok(0.0);
        }
        let dz = self.upload("softmax_cross_entropy", logits)?;
        let dl = self.upload("softmax_cross_entropy", labels)?;
        let mut dg = self.zeros::<f32>("softmax_cross_entropy", grad.len())?;
        let mut dloss = self.zeros::<f32>("softmax_cross_entropy", rows)?;
        let (r, c) = (rows as i32, classes as i32);
        let mut launch = self
            .stream
            .launch_builder(self.function("kiln_softmax_cross_entropy"));
        launch
            .arg(&dz)
            .arg(&dl)
            .arg(&mut dg)
            .arg(&mut dloss)
            .arg(&r)
            .arg(&c);
        // SAFETY: matches kiln_softmax_cross_entropy's signature; one thread per row.
        unsafe { launch.launch(grid(rows)) }.map_err(cuda_error("softmax_cross_entropy"))?;
        self.download("softmax_cross_entropy", &dg, grad)?;
        let mut losses = vec![0.0f32; rows];
        self.download("softmax_cross_entropy", &dloss, &mut losses)?;
        Ok((losses.iter().map(|l| *l as f64).sum::<f64>() / rows as f64) as f32)
    }

    fn sigmoid_binary_cross_entropy(
        &self,
        logits: &[f32],
        targets: &[f32],
        grad: &mut [f32],
    ) -> Result<f32> {
        check_pointwise_loss(
            "sigmoid_binary_cross_entropy",
            "targets",
            logits.len(),
            targets.len(),
            grad.len(),
        )?;
        self.pointwise_loss(
            "kiln_sigmoid_bce",
            "sigmoid_binary_cross_entropy",
            logits,
            targets,
            grad,
        )
    }

    fn mean_squared_error(&self, pred: &[f32], target: &[f32], grad: &mut [f32]) -> Result<f32> {
        check_pointwise_loss(
            "mean_squared_error",
            "target",
            pred.len(),
            target.len(),
            grad.len(),
        )?;
        self.pointwise_loss("kiln_mse", "mean_squared_error", pred, target, grad)
    }

    fn conv2d_forward(
        &self,
        s: Conv2d,
        act: Activation,
        input: &[f32],
        weights: &[f32],
        bias: &[f32],
        output: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "conv2d_forward";
        s.check_forward(input.len(), weights.len(), bias.len(), output.len())?;
        let pixels = s.out_height() * s.out_width();
        if s.batch == 0 || pixels == 0 {
            return Ok(());
        }
        let (din, dw, db) = (
            self.upload(OP, input)?,
            self.upload(OP, weights)?,
            self.upload(OP, bias)?,
        );
        let mut dout = self.zeros::<f32>(OP, output.len())?;
        let mut col = self.zeros::<f32>(OP, s.patch_len() * pixels)?;
        self.conv2d_forward_on_device(&s, act, &din, &dw, &db, &mut dout, &mut col)?;
        self.download(OP, &dout, output)
    }

    fn conv2d_backward(
        &self,
        s: Conv2d,
        input: &[f32],
        weights: &[f32],
        grad_output: &[f32],
        mut grad_input: Option<&mut [f32]>,
        grad_weights: &mut [f32],
        grad_bias: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "conv2d_backward";
        if !s.begin_backward(
            input,
            weights,
            grad_output,
            grad_input.as_deref_mut(),
            grad_weights,
            grad_bias,
        )? {
            return Ok(());
        }
        let pixels = s.out_height() * s.out_width();
        let (din, dw, dgo) = (
            self.upload(OP, input)?,
            self.upload(OP, weights)?,
            self.upload(OP, grad_output)?,
        );
        let mut dgw = self.zeros::<f32>(OP, s.weight_len())?;
        let mut dgb = self.zeros::<f32>(OP, s.out_channels)?;
        let mut col = self.zeros::<f32>(OP, s.patch_len() * pixels)?;
        let image = s.in_channels * s.height * s.width;
        let out_image = s.out_channels * pixels;
        let mut dgi = match &grad_input {
            Some(g) => Some(self.zeros::<f32>(OP, g.len())?),
            None => None,
        };
        for n in 0..s.batch {
            let go = dgo.slice(n * out_image..(n + 1) * out_image);
            self.im2col(&s, &din.slice(n * image..(n + 1) * image), &mut col)?;
            self.sgemm_on_device(
                Gemm::new(s.out_channels, s.patch_len(), pixels)
                    .trans_b()
                    .accumulate(),
                &go,
                &col.slice(..),
                &mut dgw.slice_mut(..),
            )?;
            if let Some(dgi) = dgi.as_mut() {
                self.sgemm_on_device(
                    Gemm::new(s.patch_len(), pixels, s.out_channels).trans_a(),
                    &dw.slice(..),
                    &go,
                    &mut col.slice_mut(..),
                )?;
                self.col2im(&s, &col, &mut dgi.slice_mut(n * image..(n + 1) * image))?;
            }
        }
        let (batch, channels, plane) = (s.batch as i32, s.out_channels as i32, pixels as i32);
        let cfg = LaunchConfig {
            grid_dim: (s.out_channels as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut launch = self
            .stream
            .launch_builder(self.function("kiln_channel_sums"));
        launch
            .arg(&dgo)
            .arg(&mut dgb)
            .arg(&batch)
            .arg(&channels)
            .arg(&plane);
        // SAFETY: matches kiln_channel_sums; 256 threads fill its shared array.
        unsafe { launch.launch(cfg) }.map_err(cuda_error(OP))?;
        self.download(OP, &dgw, grad_weights)?;
        self.download(OP, &dgb, grad_bias)?;
        if let (Some(host), Some(device)) = (grad_input, dgi) {
            self.download(OP, &device, host)?;
        }
        Ok(())
    }

    fn max_pool2d_forward(
        &self,
        s: Pool2d,
        input: &[f32],
        output: &mut [f32],
        argmax: &mut [u32],
    ) -> Result<()> {
        const OP: &str = "max_pool2d_forward";
        s.check_forward(input.len(), output.len(), argmax.len())?;
        if output.is_empty() {
            return Ok(());
        }
        let din = self.upload(OP, input)?;
        let mut dout = self.zeros::<f32>(OP, output.len())?;
        let mut darg = self.zeros::<u32>(OP, argmax.len())?;
        let (planes, h, w, size) = pool_geometry(&s);
        let mut launch = self
            .stream
            .launch_builder(self.function("kiln_max_pool_forward"));
        launch
            .arg(&din)
            .arg(&mut dout)
            .arg(&mut darg)
            .arg(&planes)
            .arg(&h)
            .arg(&w)
            .arg(&size);
        // SAFETY: matches kiln_max_pool_forward's signature.
        unsafe { launch.launch(grid(output.len())) }.map_err(cuda_error(OP))?;
        self.download(OP, &dout, output)?;
        self.download(OP, &darg, argmax)
    }

    fn max_pool2d_backward(
        &self,
        s: Pool2d,
        grad_output: &[f32],
        argmax: &[u32],
        grad_input: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "max_pool2d_backward";
        s.check_backward(grad_output.len(), argmax.len(), grad_input.len())?;
        if grad_input.is_empty() {
            return Ok(());
        }
        let (dgo, darg) = (self.upload(OP, grad_output)?, self.upload(OP, argmax)?);
        let mut dgi = self.zeros::<f32>(OP, grad_input.len())?;
        if !grad_output.is_empty() {
            let (planes, h, w, size) = pool_geometry(&s);
            let mut launch = self
                .stream
                .launch_builder(self.function("kiln_max_pool_backward"));
            launch
                .arg(&dgo)
                .arg(&darg)
                .arg(&mut dgi)
                .arg(&planes)
                .arg(&h)
                .arg(&w)
                .arg(&size);
            // SAFETY: matches kiln_max_pool_backward's signature.
            unsafe { launch.launch(grid(grad_output.len())) }.map_err(cuda_error(OP))?;
        }
        self.download(OP, &dgi, grad_input)
    }

    fn optimizer_step(
        &self,
        optimizer: Optimizer,
        params: &mut [f32],
        grads: &[f32],
        state: &mut OptimizerState,
    ) -> Result<()> {
        const OP: &str = "optimizer_step";
        let n = params.len();
        expect_len(OP, "grads", n, grads.len())?;
        state.step += 1;
        if n == 0 {
            return Ok(());
        }
        let (mut dp, dg) = (self.upload(OP, params)?, self.upload(OP, grads)?);
        let count = n as i64;
        match optimizer {
            Optimizer::Sgd { learning_rate, l2 } => {
                let mut launch = self.stream.launch_builder(self.function("kiln_sgd_step"));
                launch
                    .arg(&mut dp)
                    .arg(&dg)
                    .arg(&count)
                    .arg(&learning_rate)
                    .arg(&l2);
                // SAFETY: matches kiln_sgd_step's signature.
                unsafe { launch.launch(grid(n)) }.map_err(cuda_error(OP))?;
            }
            Optimizer::Momentum {
                learning_rate,
                momentum,
                l2,
            } => {
                state.first_moment.resize(n, 0.0);
                let mut dv = self.upload(OP, &state.first_moment)?;
                let mut launch = self
                    .stream
                    .launch_builder(self.function("kiln_momentum_step"));
                launch
                    .arg(&mut dp)
                    .arg(&dg)
                    .arg(&mut dv)
                    .arg(&count)
                    .arg(&learning_rate)
                    .arg(&momentum)
                    .arg(&l2);
                // SAFETY: matches kiln_momentum_step's signature.
                unsafe { launch.launch(grid(n)) }.map_err(cuda_error(OP))?;
                self.download(OP, &dv, &mut state.first_moment)?;
            }
            Optimizer::Adam {
                learning_rate,
                beta1,
                beta2,
                epsilon,
                l2,
            } => {
                state.first_moment.resize(n, 0.0);
                state.second_moment.resize(n, 0.0);
                let t = state.step as i32;
                let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                let mut dm = self.upload(OP, &state.first_moment)?;
                let mut dv = self.upload(OP, &state.second_moment)?;
                let mut launch = self.stream.launch_builder(self.function("kiln_adam_step"));
                launch
                    .arg(&mut dp)
                    .arg(&dg)
                    .arg(&mut dm)
                    .arg(&mut dv)
                    .arg(&count)
                    .arg(&learning_rate)
                    .arg(&beta1)
                    .arg(&beta2)
                    .arg(&epsilon)
                    .arg(&l2)
                    .arg(&c1)
                    .arg(&c2);
                // SAFETY: matches kiln_adam_step's signature.
                unsafe { launch.launch(grid(n)) }.map_err(cuda_error(OP))?;
                self.download(OP, &dm, &mut state.first_moment)?;
                self.download(OP, &dv, &mut state.second_moment)?;
            }
        }
        self.download(OP, &dp, params)
    }
}

/// Device-resident timings for benchmarks: operands stay on the GPU, so the
/// numbers measure the kernels, not host transfers. Each returns seconds per
/// call (mean over `iterations` after one warm-up call).
impl CudaBackend {
    fn time(&self, iterations: usize, mut call: impl FnMut() -> Result<()>) -> Result<f64> {
        call()?;
        self.stream
            .synchronize()
            .map_err(cuda_error("synchronize"))?;
        let start = std::time::Instant::now();
        for _ in 0..iterations.max(1) {
            call()?;
        }
        self.stream
            .synchronize()
            .map_err(cuda_error("synchronize"))?;
        Ok(start.elapsed().as_secs_f64() / iterations.max(1) as f64)
    }

    pub fn time_gemm(&self, spec: Gemm, iterations: usize) -> Result<f64> {
        let a = self.allocate(spec.m * spec.k)?;
        let b = self.allocate(spec.k * spec.n)?;
        let mut c = self.allocate(spec.m * spec.n)?;
        self.time(iterations, || {
            self.sgemm_on_device(spec, &a.slice(..), &b.slice(..), &mut c.slice_mut(..))
        })
    }

    pub fn time_conv2d_forward(&self, s: Conv2d, iterations: usize) -> Result<f64> {
        let input = self.allocate(s.input_len())?;
        let weights = self.allocate(s.weight_len())?;
        let bias = self.allocate(s.out_channels)?;
        let mut output = self.allocate(s.output_len())?;
        let mut col = self.allocate(s.patch_len() * s.out_height() * s.out_width())?;
        self.time(iterations, || {
            self.conv2d_forward_on_device(
                &s,
                Activation::Relu,
                &input,
                &weights,
                &bias,
                &mut output,
                &mut col,
            )
        })
    }

    /// One Adam step over `n` parameters.
    pub fn time_adam(&self, n: usize, iterations: usize) -> Result<f64> {
        let mut params = self.allocate(n)?;
        let grads = self.allocate(n)?;
        let mut m = self.allocate(n)?;
        let mut v = self.allocate(n)?;
        let count = n as i64;
        let (lr, b1, b2, eps, l2, c1, c2) =
            (1e-3f32, 0.9f32, 0.999f32, 1e-8f32, 0.0f32, 0.1f32, 0.001f32);
        self.time(iterations, || {
            let mut launch = self.stream.launch_builder(self.function("kiln_adam_step"));
            launch
                .arg(&mut params)
                .arg(&grads)
                .arg(&mut m)
                .arg(&mut v)
                .arg(&count)
                .arg(&lr)
                .arg(&b1)
                .arg(&b2)
                .arg(&eps)
                .arg(&l2)
                .arg(&c1)
                .arg(&c2);
            // SAFETY: matches kiln_adam_step's signature over n elements.
            unsafe { launch.launch(grid(n)) }.map_err(cuda_error("adam"))?;
            Ok(())
        })
    }

    /// A device-to-device copy of `n` floats (the bandwidth reference).
    pub fn time_copy(&self, n: usize, iterations: usize) -> Result<f64> {
        let source = self.allocate(n)?;
        let mut target = self.allocate(n)?;
        self.time(iterations, || {
            self.stream
                .memcpy_dtod(&source, &mut target)
                .map_err(cuda_error("copy"))
        })
    }
}

impl CudaBackend {
    #[allow(clippy::too_many_arguments)]
    fn conv2d_forward_on_device(
        &self,
        s: &Conv2d,
        act: Activation,
        din: &CudaSlice<f32>,
        dw: &CudaSlice<f32>,
        db: &CudaSlice<f32>,
        dout: &mut CudaSlice<f32>,
        col: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let pixels = s.out_height() * s.out_width();
        let image = s.in_channels * s.height * s.width;
        let out_image = s.out_channels * pixels;
        for n in 0..s.batch {
            self.im2col(s, &din.slice(n * image..(n + 1) * image), col)?;
            self.sgemm_on_device(
                Gemm::new(s.out_channels, pixels, s.patch_len()),
                &dw.slice(..),
                &col.slice(..),
                &mut dout.slice_mut(n * out_image..(n + 1) * out_image),
            )?;
        }
        let (total, channels, plane, code) = (
            s.output_len() as i64,
            s.out_channels as i32,
            pixels as i32,
            act_code(act),
        );
        let mut launch = self
            .stream
            .launch_builder(self.function("kiln_channel_bias_activation"));
        launch
            .arg(dout)
            .arg(db)
            .arg(&total)
            .arg(&channels)
            .arg(&plane)
            .arg(&code);
        // SAFETY: matches kiln_channel_bias_activation's signature over `total` elements.
        unsafe { launch.launch(grid(s.output_len())) }.map_err(cuda_error("conv2d_forward"))?;
        Ok(())
    }

    fn pointwise_loss(
        &self,
        kernel: &'static str,
        op: &'static str,
        pred: &[f32],
        target: &[f32],
        grad: &mut [f32],
    ) -> Result<f32> {
        if pred.is_empty() {
            return Ok(0.0);
        }
        let (dp, dt) = (self.upload(op, pred)?, self.upload(op, target)?);
        let mut dg = self.zeros::<f32>(op, pred.len())?;
        let mut dl = self.zeros::<f32>(op, pred.len())?;
        let n = pred.len() as i32;
        let mut launch = self.stream.launch_builder(self.function(kernel));
        launch.arg(&dp).arg(&dt).arg(&mut dg).arg(&mut dl).arg(&n);
        // SAFETY: kiln_sigmoid_bce and kiln_mse share this signature.
        unsafe { launch.launch(grid(pred.len())) }.map_err(cuda_error(op))?;
        self.download(op, &dg, grad)?;
        let mut losses = vec![0.0f32; pred.len()];
        self.download(op, &dl, &mut losses)?;
        Ok((losses.iter().map(|l| *l as f64).sum::<f64>() / pred.len() as f64) as f32)
    }

    fn im2col(
        &self,
        s: &Conv2d,
        image: &cudarc::driver::CudaView<f32>,
        col: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let args = geometry(s);
        let mut launch = self.stream.launch_builder(self.function("kiln_im2col"));
        launch.arg(image).arg(col);
        args.iter().for_each(|a| {
            launch.arg(a);
        });
        // SAFETY: matches kiln_im2col(const float*, float*, 8 ints); `col`
        // holds patch_len · pixels elements.
        unsafe { launch.launch(grid(s.patch_len() * s.out_height() * s.out_width())) }
            .map_err(cuda_error("im2col"))?;
        Ok(())
    }

    fn col2im(
        &self,
        s: &Conv2d,
        col: &CudaSlice<f32>,
        image: &mut cudarc::driver::CudaViewMut<f32>,
    ) -> Result<()> {
        let args = geometry(s);
        let mut launch = self.stream.launch_builder(self.function("kiln_col2im"));
        launch.arg(col).arg(image);
        args.iter().for_each(|a| {
            launch.arg(a);
        });
        // SAFETY: matches kiln_col2im(const float*, float*, 8 ints) over one image.
        unsafe { launch.launch(grid(s.in_channels * s.height * s.width)) }
            .map_err(cuda_error("col2im"))?;
        Ok(())
    }
}
