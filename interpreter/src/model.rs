//! Loading a `.tflite` file into the graph IR: verify the flatbuffer, then decode every
//! subgraph, tensor and node into plain Rust values, checking each index, shape and buffer
//! size on the way. Constant data stays in the mapped file (zero-copy) unless it is
//! misaligned or sparse, in which case an aligned dense copy is made once here.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::error::ModelError;
use crate::ops::{BuiltinOp, OpKind, OpOptions, called_subgraphs, decode_options};
use crate::schema::{self, verify_model};
use crate::sparsity::{SparseDim, Sparsity, densify};
use crate::tensor::{AlignedBuf, DType, Quant, element_count};

/// The bytes of a model file: mapped read-only, or owned (e.g. received from a client).
pub enum ModelBytes {
    Mapped(memmap2::Mmap),
    Owned(AlignedBuf),
}

impl ModelBytes {
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ModelBytes::Mapped(m) => m,
            ModelBytes::Owned(b) => b.as_slice(),
        }
    }
}

/// Constant tensor data: a range of the model bytes, an owned aligned copy, or a sparse
/// tensor as stored.
#[derive(Clone)]
pub enum ConstData {
    Model {
        bytes: Arc<ModelBytes>,
        range: Range<usize>,
    },
    Owned(Arc<AlignedBuf>),
    /// Kept compressed: the loader checked that it expands, and each plan expands it
    /// while it prepares, then drops the dense copy once no step reads it (the usual
    /// case: DENSIFY is folded and the weights it feeds are packed). Holding the dense
    /// form for the model's lifetime cost pose detection 5.2 MiB per loaded model.
    Sparse(Arc<SparseConst>),
}

impl ConstData {
    /// The dense bytes. Empty for a sparse constant: read it with [`ConstData::dense`].
    pub fn as_slice(&self) -> &[u8] {
        match self {
            ConstData::Model { bytes, range } => &bytes.as_slice()[range.clone()],
            ConstData::Owned(b) => b.as_slice(),
            ConstData::Sparse(_) => &[],
        }
    }

    /// The dense bytes, expanding a sparse constant into a new buffer.
    pub fn dense(&self) -> Result<std::borrow::Cow<'_, [u8]>, String> {
        match self {
            ConstData::Sparse(s) => Ok(std::borrow::Cow::Owned(s.densify()?.as_slice().to_vec())),
            other => Ok(std::borrow::Cow::Borrowed(other.as_slice())),
        }
    }

    /// The sparse form, when the constant is stored so.
    pub fn sparse(&self) -> Option<&SparseConst> {
        match self {
            ConstData::Sparse(s) => Some(s),
            _ => None,
        }
    }
}

/// A sparse constant as the file stores it: the values and how they expand.
pub struct SparseConst {
    bytes: Arc<ModelBytes>,
    range: Range<usize>,
    sparsity: Sparsity,
    shape: Vec<usize>,
    dtype: DType,
    /// The expansion the loader made to check it, handed to the first prepare so a
    /// load expands each sparse tensor once.
    checked: std::sync::Mutex<Option<AlignedBuf>>,
}

impl SparseConst {
    /// The dense tensor, in a new aligned buffer (the loader's own the first time).
    pub fn densify(&self) -> Result<AlignedBuf, String> {
        if let Some(dense) = self.checked.lock().ok().and_then(|mut c| c.take()) {
            return Ok(dense);
        }
        densify(
            &self.sparsity,
            &self.shape,
            self.dtype,
            &self.bytes.as_slice()[self.range.clone()],
        )
    }

    /// Bytes of the dense tensor.
    pub fn dense_len(&self) -> usize {
        element_count(&self.shape)
            .and_then(|n| n.checked_mul(self.dtype.size()))
            .unwrap_or(usize::MAX)
    }
}

impl std::fmt::Debug for ConstData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConstData::Sparse(s) => write!(f, "ConstData(sparse, {} bytes stored)", s.range.len()),
            other => write!(f, "ConstData({} bytes)", other.as_slice().len()),
        }
    }
}

/// One tensor of a subgraph.
#[derive(Clone, Debug)]
pub struct TensorDef {
    pub name: String,
    pub dtype: DType,
    /// Stored shape (placeholders such as 1 where the signature has -1).
    pub shape: Vec<usize>,
    /// Shape signature with -1 for dynamic dimensions, when the model has one.
    pub shape_signature: Option<Vec<i32>>,
    pub quant: Option<Quant>,
    pub data: Option<ConstData>,
    pub is_variable: bool,
    /// True when the stored data was sparse and has been densified at load.
    pub was_sparse: bool,
}

impl TensorDef {
    pub fn is_const(&self) -> bool {
        self.data.is_some()
    }
}

/// One operator application.
#[derive(Clone, Debug)]
pub struct Node {
    pub index: usize,
    pub op: OpKind,
    pub version: i32,
    pub options: OpOptions,
    /// `None` marks an omitted optional input (index -1 in the file).
    pub inputs: Vec<Option<usize>>,
    pub outputs: Vec<usize>,
    /// Tensors that only carry quantization parameters for the kernel (TFLite's
    /// `Operator.intermediates`): an integer LSTM's gate and hidden scales. They hold
    /// no data and are neither read nor written at run time.
    pub intermediates: Vec<usize>,
}

impl Node {
    pub fn builtin(&self) -> Option<BuiltinOp> {
        self.op.builtin()
    }
}

#[derive(Clone, Debug)]
pub struct Subgraph {
    pub name: String,
    pub tensors: Vec<TensorDef>,
    pub nodes: Vec<Node>,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
}

/// A named entry point (`SignatureDef`).
#[derive(Clone, Debug)]
pub struct Signature {
    pub key: String,
    pub subgraph: usize,
    pub inputs: Vec<(String, usize)>,
    pub outputs: Vec<(String, usize)>,
}

/// A loaded, validated model.
pub struct Model {
    pub subgraphs: Vec<Subgraph>,
    pub signatures: Vec<Signature>,
    pub description: String,
    pub version: u32,
    /// Size of the model file in bytes.
    pub byte_len: usize,
    bytes: Arc<ModelBytes>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("subgraphs", &self.subgraphs.len())
            .field("bytes", &self.byte_len)
            .finish()
    }
}

/// Longest accepted tensor rank; real models use at most 6.
const MAX_RANK: usize = 16;

impl Model {
    /// Maps and loads a model file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Model, ModelError> {
        let path = path.as_ref();
        let io = |source| ModelError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only and private. A file truncated by another
        // process while mapped would fault; model files are installed, not edited live,
        // and the daemon loads client bytes through `from_bytes` instead.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Model::from_storage(ModelBytes::Mapped(map))
    }

    /// Loads a model from bytes in memory (copied once into an aligned buffer).
    pub fn from_bytes(bytes: &[u8]) -> Result<Model, ModelError> {
        let owned = AlignedBuf::try_from_bytes(bytes)?;
        Model::from_storage(ModelBytes::Owned(owned))
    }

    /// The raw bytes of the model file.
    pub fn bytes(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    fn from_storage(storage: ModelBytes) -> Result<Model, ModelError> {
        let storage = Arc::new(storage);
        let buf = storage.as_slice();
        let root = verify_model(buf)?;
        let buffers: Vec<schema::Buffer<'_>> = root
            .buffers()
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        let opcodes: Vec<OpKind> = root
            .operator_codes()
            .map(|v| v.iter().map(decode_opcode).collect())
            .unwrap_or_default();
        let opcode_versions: Vec<i32> = root
            .operator_codes()
            .map(|v| v.iter().map(|c| c.version()).collect())
            .unwrap_or_default();
        let sg_tables: Vec<schema::SubGraph<'_>> = root
            .subgraphs()
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        if sg_tables.is_empty() {
            return Err(ModelError::NoSubgraphs);
        }
        let mut subgraphs = Vec::with_capacity(sg_tables.len());
        for (si, sg) in sg_tables.iter().enumerate() {
            subgraphs.push(decode_subgraph(
                si,
                sg,
                &buffers,
                &opcodes,
                &opcode_versions,
                &storage,
            )?);
        }
        let n_subgraphs = subgraphs.len();
        for (si, sg) in subgraphs.iter().enumerate() {
            for node in &sg.nodes {
                for callee in called_subgraphs(&node.options) {
                    if callee >= n_subgraphs {
                        return Err(ModelError::Node {
                            subgraph: si,
                            node: node.index,
                            op: node.op.to_string(),
                            what: format!(
                                "calls subgraph {callee}, but the model has {n_subgraphs}"
                            ),
                        });
                    }
                }
            }
        }
        for (si, sg) in subgraphs.iter().enumerate() {
            crate::verify::check_dataflow(si, sg)?;
        }
        crate::verify::check_calls_acyclic(&subgraphs)?;
        let mut signatures = Vec::new();
        if let Some(defs) = root.signature_defs() {
            for def in defs.iter() {
                let subgraph = def.subgraph_index() as usize;
                let Some(sg) = subgraphs.get(subgraph) else {
                    return Err(ModelError::Invalid {
                        subgraph,
                        what: "signature names a missing subgraph".into(),
                    });
                };
                let map = |v: Option<
                    flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<schema::TensorMap<'_>>>,
                >| {
                    v.map(|v| {
                        v.iter()
                            .map(|m| {
                                (
                                    m.name().unwrap_or("").to_string(),
                                    m.tensor_index() as usize,
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                };
                let inputs = map(def.inputs());
                let outputs = map(def.outputs());
                if let Some((name, t)) = inputs
                    .iter()
                    .chain(outputs.iter())
                    .find(|(_, t)| *t >= sg.tensors.len())
                {
                    return Err(ModelError::Invalid {
                        subgraph,
                        what: format!("signature tensor {name} has index {t} out of range"),
                    });
                }
                signatures.push(Signature {
                    key: def.signature_key().unwrap_or("").to_string(),
                    subgraph,
                    inputs,
                    outputs,
                });
            }
        }
        Ok(Model {
            subgraphs,
            signatures,
            description: root.description().unwrap_or("").to_string(),
            version: root.version(),
            byte_len: buf.len(),
            bytes: storage.clone(),
        })
    }
}

fn decode_opcode(code: schema::OperatorCode<'_>) -> OpKind {
    // Files written before the 127+ opcodes carry only the deprecated byte; newer files
    // carry both, and the larger of the two is the real code.
    let code_i32 = code
        .builtin_code()
        .max(code.deprecated_builtin_code() as i32);
    match BuiltinOp::from_code(code_i32) {
        Some(BuiltinOp::Custom) => OpKind::Custom(code.custom_code().unwrap_or("").to_string()),
        Some(op) => OpKind::Builtin(op),
        None => OpKind::UnknownBuiltin(code_i32),
    }
}

fn decode_subgraph(
    si: usize,
    sg: &schema::SubGraph<'_>,
    buffers: &[schema::Buffer<'_>],
    opcodes: &[OpKind],
    opcode_versions: &[i32],
    storage: &Arc<ModelBytes>,
) -> Result<Subgraph, ModelError> {
    let file = storage.as_slice();
    let mut tensors = Vec::new();
    if let Some(ts) = sg.tensors() {
        for (ti, t) in ts.iter().enumerate() {
            tensors.push(decode_tensor(si, ti, &t, buffers, file, storage)?);
        }
    }
    let n = tensors.len();
    let check_index = |what: &str, i: i32| -> Result<usize, ModelError> {
        usize::try_from(i)
            .ok()
            .filter(|&i| i < n)
            .ok_or_else(|| ModelError::Invalid {
                subgraph: si,
                what: format!("{what} tensor index {i} out of range (subgraph has {n} tensors)"),
            })
    };
    let inputs = sg
        .inputs()
        .map(|v| {
            v.iter()
                .map(|i| check_index("input", i))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let outputs = sg
        .outputs()
        .map(|v| {
            v.iter()
                .map(|i| check_index("output", i))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let mut nodes = Vec::new();
    if let Some(ops) = sg.operators() {
        for (ni, op) in ops.iter().enumerate() {
            let oc = op.opcode_index() as usize;
            let kind = opcodes.get(oc).cloned().ok_or_else(|| ModelError::Node {
                subgraph: si,
                node: ni,
                op: "?".into(),
                what: format!("opcode index {oc} out of range ({} opcodes)", opcodes.len()),
            })?;
            let node_err = |what: String| ModelError::Node {
                subgraph: si,
                node: ni,
                op: kind.to_string(),
                what,
            };
            let mut node_inputs = Vec::new();
            for i in op.inputs().iter().flat_map(|v| v.iter()) {
                if i == -1 {
                    node_inputs.push(None);
                } else {
                    node_inputs.push(Some(
                        check_index("node input", i).map_err(|e| node_err(e.to_string()))?,
                    ));
                }
            }
            let mut node_outputs = Vec::new();
            for i in op.outputs().iter().flat_map(|v| v.iter()) {
                node_outputs
                    .push(check_index("node output", i).map_err(|e| node_err(e.to_string()))?);
            }
            let mut node_intermediates = Vec::new();
            for i in op.intermediates().iter().flat_map(|v| v.iter()) {
                node_intermediates.push(
                    check_index("node intermediate", i).map_err(|e| node_err(e.to_string()))?,
                );
            }
            let options = match &kind {
                OpKind::Builtin(b) => decode_options(*b, op.builtin_options()),
                OpKind::Custom(_) => OpOptions::Custom(
                    op.custom_options()
                        .map(|v| v.bytes().to_vec())
                        .unwrap_or_default(),
                ),
                OpKind::UnknownBuiltin(_) => OpOptions::None,
            };
            nodes.push(Node {
                index: ni,
                op: kind,
                version: opcode_versions.get(oc).copied().unwrap_or(1),
                options,
                inputs: node_inputs,
                outputs: node_outputs,
                intermediates: node_intermediates,
            });
        }
    }
    Ok(Subgraph {
        name: sg.name().unwrap_or("").to_string(),
        tensors,
        nodes,
        inputs,
        outputs,
    })
}

fn decode_tensor(
    si: usize,
    ti: usize,
    t: &schema::Tensor<'_>,
    buffers: &[schema::Buffer<'_>],
    file: &[u8],
    storage: &Arc<ModelBytes>,
) -> Result<TensorDef, ModelError> {
    let name = t.name().unwrap_or("").to_string();
    let err = |what: String| ModelError::Tensor {
        subgraph: si,
        tensor: ti,
        name: name.clone(),
        what,
    };
    let dtype = DType::from_schema(t.tensor_type())
        .ok_or_else(|| err(format!("unsupported tensor type code {}", t.tensor_type())))?;
    let raw_shape: Vec<i32> = t.shape().map(|v| v.iter().collect()).unwrap_or_default();
    if raw_shape.len() > MAX_RANK {
        return Err(err(format!("rank {} exceeds {MAX_RANK}", raw_shape.len())));
    }
    let shape = raw_shape
        .iter()
        .map(|&d| {
            usize::try_from(d)
                .map_err(|_| err(format!("negative dimension in shape {raw_shape:?}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = element_count(&shape)
        .and_then(|c| c.checked_mul(dtype.size()))
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| err(format!("shape {shape:?} is too large")))?;
    let shape_signature: Option<Vec<i32>> = t.shape_signature().map(|v| v.iter().collect());
    if let Some(sig) = &shape_signature
        && sig.len() != shape.len()
    {
        return Err(err(format!(
            "shape signature {sig:?} does not match shape {shape:?}"
        )));
    }

    let quant = t.quantization().and_then(|q| {
        let scale: Vec<f32> = q.scale().map(|v| v.iter().collect()).unwrap_or_default();
        if scale.is_empty() {
            return None;
        }
        let zero_point: Vec<i64> = q
            .zero_point()
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        Some(Quant {
            scale,
            zero_point,
            axis: usize::try_from(q.quantized_dimension()).unwrap_or(usize::MAX),
        })
    });
    if let Some(q) = &quant {
        if !q.zero_point.is_empty() && q.zero_point.len() != q.scale.len() {
            return Err(err(format!(
                "{} scales but {} zero points",
                q.scale.len(),
                q.zero_point.len()
            )));
        }
        if q.scale.len() > 1 {
            let dim = shape.get(q.axis).copied();
            if dim != Some(q.scale.len()) {
                return Err(err(format!(
                    "{} per-channel scales along axis {} of shape {shape:?}",
                    q.scale.len(),
                    q.axis
                )));
            }
        }
        if q.scale.iter().any(|s| !s.is_finite()) {
            return Err(err("non-finite quantization scale".into()));
        }
        // A zero point is a value of the tensor's type (TFLite's kernels offset by it
        // in int32 arithmetic, scaled by up to 2^20): one outside the type's range is
        // no real model's and would overflow that arithmetic. Refused once here, for
        // every kernel.
        let range = match dtype {
            DType::U8 => Some((0, 255)),
            DType::I8 => Some((-128, 127)),
            DType::I16 => Some((-32768, 32767)),
            DType::U16 => Some((0, 65535)),
            _ => None,
        };
        if let Some((lo, hi)) = range
            && let Some(zp) = q.zero_point.iter().find(|z| !(lo..=hi).contains(*z))
        {
            return Err(err(format!(
                "zero point {zp} outside the range of {dtype:?} ({lo}..={hi})"
            )));
        }
    }

    let buffer_index = t.buffer() as usize;
    let buffer = buffers.get(buffer_index).ok_or_else(|| {
        err(format!(
            "buffer index {buffer_index} out of range ({} buffers)",
            buffers.len()
        ))
    })?;
    let mut range = None;
    if let Some(data) = buffer.data() {
        if !data.is_empty() {
            let start = data.bytes().as_ptr() as usize - file.as_ptr() as usize;
            range = Some(start..start + data.len());
        }
    } else if buffer.offset() > 1 {
        let start =
            usize::try_from(buffer.offset()).map_err(|_| err("buffer offset too large".into()))?;
        let len =
            usize::try_from(buffer.size()).map_err(|_| err("buffer size too large".into()))?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= file.len())
            .ok_or_else(|| {
                err(format!(
                    "external buffer {start}+{len} lies outside the {}-byte file",
                    file.len()
                ))
            })?;
        range = Some(start..end);
    }

    let mut was_sparse = false;
    let data = match range {
        None => None,
        Some(range) => {
            if let Some(sp) = t.sparsity() {
                let sparsity = decode_sparsity(&sp).map_err(err)?;
                // Expanded here so a malformed one is refused at load; the first prepare
                // takes this copy and drops it (see `ConstData::Sparse`).
                let dense = densify(&sparsity, &shape, dtype, &file[range.clone()]).map_err(err)?;
                was_sparse = true;
                Some(ConstData::Sparse(Arc::new(SparseConst {
                    bytes: storage.clone(),
                    range,
                    sparsity,
                    shape: shape.clone(),
                    dtype,
                    checked: std::sync::Mutex::new(Some(dense)),
                })))
            } else {
                if dtype != DType::Str && range.len() != count {
                    return Err(err(format!(
                        "buffer holds {} bytes but shape {shape:?} of {dtype} needs {count}",
                        range.len()
                    )));
                }
                let aligned =
                    (file.as_ptr() as usize + range.start).is_multiple_of(dtype.size().max(1));
                if aligned {
                    Some(ConstData::Model {
                        bytes: storage.clone(),
                        range,
                    })
                } else {
                    let copy =
                        AlignedBuf::try_from_bytes(&file[range]).map_err(|e| err(e.to_string()))?;
                    Some(ConstData::Owned(Arc::new(copy)))
                }
            }
        }
    };
    Ok(TensorDef {
        name,
        dtype,
        shape,
        shape_signature,
        quant,
        data,
        is_variable: t.is_variable(),
        was_sparse,
    })
}

fn decode_sparsity(sp: &schema::SparsityParameters<'_>) -> Result<Sparsity, String> {
    let traversal_order: Vec<usize> = sp
        .traversal_order()
        .map(|v| {
            v.iter()
                .map(|x| usize::try_from(x).map_err(|_| "negative traversal order".to_string()))
                .collect::<Result<_, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    // Each block dimension subdivides one original dimension: more block dimensions than
    // the largest rank cannot be a real tensor, only a way to make densify deep.
    if sp.block_map().is_some_and(|v| v.len() > MAX_RANK) {
        return Err(format!(
            "sparsity block map has more than {MAX_RANK} entries"
        ));
    }
    if sp.traversal_order().is_some_and(|v| v.len() > 2 * MAX_RANK)
        || sp.dim_metadata().is_some_and(|v| v.len() > 2 * MAX_RANK)
    {
        return Err(format!(
            "sparsity has more than {} traversal levels",
            2 * MAX_RANK
        ));
    }
    let block_map: Vec<usize> = sp
        .block_map()
        .map(|v| {
            v.iter()
                .map(|x| usize::try_from(x).map_err(|_| "negative block map".to_string()))
                .collect::<Result<_, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    let mut dims = Vec::new();
    for dm in sp.dim_metadata().iter().flat_map(|v| v.iter()) {
        if dm.format() == 0 {
            dims.push(SparseDim::Dense {
                size: usize::try_from(dm.dense_size())
                    .map_err(|_| "negative dense size".to_string())?,
            });
        } else {
            let segments = read_index_vector(dm.array_segments_type(), dm.array_segments())
                .ok_or("CSR dimension without a valid segments vector")?;
            let indices = read_index_vector(dm.array_indices_type(), dm.array_indices())
                .ok_or("CSR dimension without a valid indices vector")?;
            dims.push(SparseDim::Csr { segments, indices });
        }
    }
    Ok(Sparsity {
        traversal_order,
        block_map,
        dims,
    })
}

/// Reads a `SparseIndexVector` union value: 1 = int32, 2 = uint16, 3 = uint8 vector.
fn read_index_vector(
    kind: u8,
    table: Option<schema::options::OptionsTable<'_>>,
) -> Option<Vec<usize>> {
    let t = table?;
    match kind {
        1 => t
            .vector::<i32>(0)?
            .into_iter()
            .map(|v| usize::try_from(v).ok())
            .collect(),
        2 => Some(t.vector::<u16>(0)?.into_iter().map(usize::from).collect()),
        3 => Some(t.vector::<u8>(0)?.into_iter().map(usize::from).collect()),
        _ => None,
    }
}
