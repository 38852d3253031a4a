//! Operator identities (`BuiltinOp`, numbered as the schema's `BuiltinOperator`) and their
//! typed options, decoded once at load time so kernels never touch flatbuffers.

use std::fmt;

use crate::schema::options::OptionsTable;
use crate::tensor::DType;

macro_rules! builtin_ops {
    ($($variant:ident = $code:literal $name:literal),* $(,)?) => {
        /// A builtin TFLite operator.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum BuiltinOp { $($variant),* }

        impl BuiltinOp {
            pub fn from_code(code: i32) -> Option<BuiltinOp> {
                match code { $($code => Some(BuiltinOp::$variant),)* _ => None }
            }
            pub fn code(self) -> i32 {
                match self { $(BuiltinOp::$variant => $code),* }
            }
            /// The schema's upper-case name, as LiteRT prints it.
            pub fn name(self) -> &'static str {
                match self { $(BuiltinOp::$variant => $name),* }
            }
            pub fn from_name(name: &str) -> Option<BuiltinOp> {
                match name { $($name => Some(BuiltinOp::$variant),)* _ => None }
            }
        }
    };
}

builtin_ops! {
    Add = 0 "ADD", AveragePool2d = 1 "AVERAGE_POOL_2D", Concatenation = 2 "CONCATENATION",
    Conv2d = 3 "CONV_2D", DepthwiseConv2d = 4 "DEPTHWISE_CONV_2D", DepthToSpace = 5 "DEPTH_TO_SPACE",
    Dequantize = 6 "DEQUANTIZE", EmbeddingLookup = 7 "EMBEDDING_LOOKUP", Floor = 8 "FLOOR",
    FullyConnected = 9 "FULLY_CONNECTED", HashtableLookup = 10 "HASHTABLE_LOOKUP",
    L2Normalization = 11 "L2_NORMALIZATION", L2Pool2d = 12 "L2_POOL_2D",
    LocalResponseNormalization = 13 "LOCAL_RESPONSE_NORMALIZATION", Logistic = 14 "LOGISTIC",
    LshProjection = 15 "LSH_PROJECTION", Lstm = 16 "LSTM", MaxPool2d = 17 "MAX_POOL_2D",
    Mul = 18 "MUL", Relu = 19 "RELU", ReluN1To1 = 20 "RELU_N1_TO_1", Relu6 = 21 "RELU6",
    Reshape = 22 "RESHAPE", ResizeBilinear = 23 "RESIZE_BILINEAR", Rnn = 24 "RNN",
    Softmax = 25 "SOFTMAX", SpaceToDepth = 26 "SPACE_TO_DEPTH", Svdf = 27 "SVDF", Tanh = 28 "TANH",
    ConcatEmbeddings = 29 "CONCAT_EMBEDDINGS", SkipGram = 30 "SKIP_GRAM", Call = 31 "CALL",
    Custom = 32 "CUSTOM", EmbeddingLookupSparse = 33 "EMBEDDING_LOOKUP_SPARSE", Pad = 34 "PAD",
    UnidirectionalSequenceRnn = 35 "UNIDIRECTIONAL_SEQUENCE_RNN", Gather = 36 "GATHER",
    BatchToSpaceNd = 37 "BATCH_TO_SPACE_ND", SpaceToBatchNd = 38 "SPACE_TO_BATCH_ND",
    Transpose = 39 "TRANSPOSE", Mean = 40 "MEAN", Sub = 41 "SUB", Div = 42 "DIV",
    Squeeze = 43 "SQUEEZE", UnidirectionalSequenceLstm = 44 "UNIDIRECTIONAL_SEQUENCE_LSTM",
    StridedSlice = 45 "STRIDED_SLICE", BidirectionalSequenceRnn = 46 "BIDIRECTIONAL_SEQUENCE_RNN",
    Exp = 47 "EXP", TopkV2 = 48 "TOPK_V2", Split = 49 "SPLIT", LogSoftmax = 50 "LOG_SOFTMAX",
    Delegate = 51 "DELEGATE", BidirectionalSequenceLstm = 52 "BIDIRECTIONAL_SEQUENCE_LSTM",
    Cast = 53 "CAST", Prelu = 54 "PRELU", Maximum = 55 "MAXIMUM", ArgMax = 56 "ARG_MAX",
    Minimum = 57 "MINIMUM", Less = 58 "LESS", Neg = 59 "NEG", PadV2 = 60 "PADV2",
    Greater = 61 "GREATER", GreaterEqual = 62 "GREATER_EQUAL", LessEqual = 63 "LESS_EQUAL",
    Select = 64 "SELECT", Slice = 65 "SLICE", Sin = 66 "SIN", TransposeConv = 67 "TRANSPOSE_CONV",
    SparseToDense = 68 "SPARSE_TO_DENSE", Tile = 69 "TILE", ExpandDims = 70 "EXPAND_DIMS",
    Equal = 71 "EQUAL", NotEqual = 72 "NOT_EQUAL", Log = 73 "LOG", Sum = 74 "SUM", Sqrt = 75 "SQRT",
    Rsqrt = 76 "RSQRT", Shape = 77 "SHAPE", Pow = 78 "POW", ArgMin = 79 "ARG_MIN",
    FakeQuant = 80 "FAKE_QUANT", ReduceProd = 81 "REDUCE_PROD", ReduceMax = 82 "REDUCE_MAX",
    Pack = 83 "PACK", LogicalOr = 84 "LOGICAL_OR", OneHot = 85 "ONE_HOT",
    LogicalAnd = 86 "LOGICAL_AND", LogicalNot = 87 "LOGICAL_NOT", Unpack = 88 "UNPACK",
    ReduceMin = 89 "REDUCE_MIN", FloorDiv = 90 "FLOOR_DIV", ReduceAny = 91 "REDUCE_ANY",
    Square = 92 "SQUARE", ZerosLike = 93 "ZEROS_LIKE", Fill = 94 "FILL", FloorMod = 95 "FLOOR_MOD",
    Range = 96 "RANGE", ResizeNearestNeighbor = 97 "RESIZE_NEAREST_NEIGHBOR",
    LeakyRelu = 98 "LEAKY_RELU", SquaredDifference = 99 "SQUARED_DIFFERENCE",
    MirrorPad = 100 "MIRROR_PAD", Abs = 101 "ABS", SplitV = 102 "SPLIT_V", Unique = 103 "UNIQUE",
    Ceil = 104 "CEIL", ReverseV2 = 105 "REVERSE_V2", AddN = 106 "ADD_N", GatherNd = 107 "GATHER_ND",
    Cos = 108 "COS", Where = 109 "WHERE", Rank = 110 "RANK", Elu = 111 "ELU",
    ReverseSequence = 112 "REVERSE_SEQUENCE", MatrixDiag = 113 "MATRIX_DIAG",
    Quantize = 114 "QUANTIZE", MatrixSetDiag = 115 "MATRIX_SET_DIAG", Round = 116 "ROUND",
    HardSwish = 117 "HARD_SWISH", If = 118 "IF", While = 119 "WHILE",
    NonMaxSuppressionV4 = 120 "NON_MAX_SUPPRESSION_V4",
    NonMaxSuppressionV5 = 121 "NON_MAX_SUPPRESSION_V5", ScatterNd = 122 "SCATTER_ND",
    SelectV2 = 123 "SELECT_V2", Densify = 124 "DENSIFY", SegmentSum = 125 "SEGMENT_SUM",
    BatchMatmul = 126 "BATCH_MATMUL", Cumsum = 128 "CUMSUM", CallOnce = 129 "CALL_ONCE",
    BroadcastTo = 130 "BROADCAST_TO", Rfft2d = 131 "RFFT2D", Conv3d = 132 "CONV_3D",
    Imag = 133 "IMAG", Real = 134 "REAL", ComplexAbs = 135 "COMPLEX_ABS", Hashtable = 136 "HASHTABLE",
    HashtableFind = 137 "HASHTABLE_FIND", HashtableImport = 138 "HASHTABLE_IMPORT",
    HashtableSize = 139 "HASHTABLE_SIZE", ReduceAll = 140 "REDUCE_ALL",
    Conv3dTranspose = 141 "CONV_3D_TRANSPOSE", VarHandle = 142 "VAR_HANDLE",
    ReadVariable = 143 "READ_VARIABLE", AssignVariable = 144 "ASSIGN_VARIABLE",
    BroadcastArgs = 145 "BROADCAST_ARGS", RandomStandardNormal = 146 "RANDOM_STANDARD_NORMAL",
    Bucketize = 147 "BUCKETIZE", RandomUniform = 148 "RANDOM_UNIFORM", Multinomial = 149 "MULTINOMIAL",
    Gelu = 150 "GELU",
}

/// What a node runs: a builtin (known or not) or a custom op by name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    Builtin(BuiltinOp),
    /// A builtin code this build does not know.
    UnknownBuiltin(i32),
    Custom(String),
}

impl OpKind {
    pub fn builtin(&self) -> Option<BuiltinOp> {
        match self {
            OpKind::Builtin(op) => Some(*op),
            _ => None,
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpKind::Builtin(op) => f.write_str(op.name()),
            OpKind::UnknownBuiltin(code) => write!(f, "builtin operator code {code}"),
            OpKind::Custom(name) => write!(f, "custom op {name}"),
        }
    }
}

/// Activation fused into an op's output (`ActivationFunctionType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    ReluN1To1,
    Relu6,
    Tanh,
    SignBit,
}

impl Activation {
    fn from_code(code: i8) -> Activation {
        match code {
            1 => Activation::Relu,
            2 => Activation::ReluN1To1,
            3 => Activation::Relu6,
            4 => Activation::Tanh,
            5 => Activation::SignBit,
            _ => Activation::None,
        }
    }

    pub fn code(self) -> i8 {
        match self {
            Activation::None => 0,
            Activation::Relu => 1,
            Activation::ReluN1To1 => 2,
            Activation::Relu6 => 3,
            Activation::Tanh => 4,
            Activation::SignBit => 5,
        }
    }

    /// Applies the activation to a float value.
    #[inline(always)]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::None | Activation::SignBit => x,
            Activation::Relu => x.max(0.0),
            Activation::ReluN1To1 => x.clamp(-1.0, 1.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Tanh => x.tanh(),
        }
    }

    /// The (min, max) clamp this activation implies for floats (Tanh is not a clamp and
    /// reports the full range).
    pub fn float_range(self) -> (f32, f32) {
        match self {
            Activation::Relu => (0.0, f32::INFINITY),
            Activation::ReluN1To1 => (-1.0, 1.0),
            Activation::Relu6 => (0.0, 6.0),
            _ => (f32::NEG_INFINITY, f32::INFINITY),
        }
    }
}

/// Spatial padding scheme (`Padding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Padding {
    #[default]
    Same,
    Valid,
}

impl Padding {
    fn from_code(code: i8) -> Padding {
        if code == 1 {
            Padding::Valid
        } else {
            Padding::Same
        }
    }
    pub fn code(self) -> i8 {
        match self {
            Padding::Same => 0,
            Padding::Valid => 1,
        }
    }
}

/// Options of a 2-D convolution (also used by the transposed-convolution custom op).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ConvOptions {
    pub padding: Padding,
    pub stride_w: usize,
    pub stride_h: usize,
    pub dilation_w: usize,
    pub dilation_h: usize,
    /// Only for depthwise convolution.
    pub depth_multiplier: usize,
    pub activation: Activation,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct PoolOptions {
    pub padding: Padding,
    pub stride_w: usize,
    pub stride_h: usize,
    pub filter_w: usize,
    pub filter_h: usize,
    pub activation: Activation,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct StridedSliceOptions {
    pub begin_mask: i32,
    pub end_mask: i32,
    pub ellipsis_mask: i32,
    pub new_axis_mask: i32,
    pub shrink_axis_mask: i32,
    pub offset: bool,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct LstmOptions {
    pub activation: Activation,
    pub cell_clip: f32,
    pub proj_clip: f32,
    pub time_major: bool,
    /// Hybrid LSTMs: quantize each float input row with its own zero point (TF's
    /// converter sets it on dynamic-range models) instead of symmetrically.
    pub asymmetric_quantize_inputs: bool,
}

/// How MIRROR_PAD mirrors (`MirrorPadMode`): REFLECT leaves the edge element out of the
/// mirrored part, SYMMETRIC repeats it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MirrorPadMode {
    #[default]
    Reflect,
    Symmetric,
}

/// Decoded options of one node. Ops without options (or whose options we ignore) get
/// `OpOptions::None`.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum OpOptions {
    #[default]
    None,
    Conv(ConvOptions),
    Pool(PoolOptions),
    FullyConnected {
        activation: Activation,
        keep_num_dims: bool,
        /// 0 = default layout; other (shuffled) layouts are rejected by the kernel.
        weights_format: i8,
        /// Hybrid (float input, int8 weights) only: quantize each input row with its own
        /// zero point instead of symmetrically. TF's converter sets it on dynamic-range
        /// models.
        asymmetric_quantize_inputs: bool,
    },
    /// Binary elementwise ops with a fused activation (ADD, SUB, MUL, DIV).
    Activation(Activation),
    Concatenation {
        axis: i32,
        activation: Activation,
    },
    Reshape {
        new_shape: Option<Vec<i32>>,
    },
    Reducer {
        keep_dims: bool,
    },
    Softmax {
        beta: f32,
    },
    LeakyRelu {
        alpha: f32,
    },
    Resize {
        align_corners: bool,
        half_pixel_centers: bool,
    },
    DepthToSpace {
        block_size: usize,
    },
    StridedSlice(StridedSliceOptions),
    Split {
        num_splits: usize,
    },
    Squeeze {
        dims: Vec<i32>,
    },
    Gather {
        axis: i32,
        batch_dims: i32,
    },
    /// PACK: stacks `values_count` equal-shaped inputs along a new `axis`.
    Pack {
        values_count: usize,
        axis: i32,
    },
    /// UNPACK: splits `axis` into `num` outputs, removing that axis.
    Unpack {
        num: usize,
        axis: i32,
    },
    MirrorPad {
        mode: MirrorPadMode,
    },
    BatchMatmul {
        adj_x: bool,
        adj_y: bool,
        /// Hybrid BATCH_MATMUL: asymmetric per-row input quantization.
        asymmetric_quantize_inputs: bool,
    },
    If {
        then_subgraph: usize,
        else_subgraph: usize,
    },
    While {
        cond_subgraph: usize,
        body_subgraph: usize,
    },
    CallOnce {
        init_subgraph: usize,
    },
    VarHandle {
        container: String,
        shared_name: String,
    },
    Gelu {
        approximate: bool,
    },
    /// ARG_MAX / ARG_MIN: the index type. An absent table reads as the schema's default
    /// (FLOAT32), which LiteRT refuses, as the kernels must.
    ArgMinMax {
        output_type: DType,
    },
    /// CAST: the declared types (0 = FLOAT32 when absent; LiteRT goes by the tensors).
    Cast {
        in_type: DType,
        out_type: DType,
    },
    /// LOCAL_RESPONSE_NORMALIZATION.
    LocalResponseNorm {
        radius: i32,
        bias: f32,
        alpha: f32,
        beta: f32,
    },
    Lstm(LstmOptions),
    /// Raw `custom_options` bytes of a custom op.
    Custom(Vec<u8>),
}

fn usize_of(v: i32) -> usize {
    usize::try_from(v).unwrap_or(0)
}

/// Decodes the options table of `op`. Absent tables give the schema defaults.
pub fn decode_options(op: BuiltinOp, table: Option<OptionsTable<'_>>) -> OpOptions {
    use BuiltinOp as B;
    // An absent table reads every field as its default.
    let t = |id: u16, d: i32| table.map_or(d, |t| t.scalar::<i32>(id, d));
    let b = |id: u16| table.is_some_and(|t| t.scalar::<bool>(id, false));
    let i8f = |id: u16| table.map_or(0, |t| t.scalar::<i8>(id, 0));
    let f = |id: u16, d: f32| table.map_or(d, |t| t.scalar::<f32>(id, d));
    let act = |id: u16| Activation::from_code(i8f(id));
    match op {
        B::Conv2d => OpOptions::Conv(ConvOptions {
            padding: Padding::from_code(i8f(0)),
            stride_w: usize_of(t(1, 1)),
            stride_h: usize_of(t(2, 1)),
            activation: act(3),
            dilation_w: usize_of(t(4, 1)),
            dilation_h: usize_of(t(5, 1)),
            depth_multiplier: 1,
        }),
        B::DepthwiseConv2d => OpOptions::Conv(ConvOptions {
            padding: Padding::from_code(i8f(0)),
            stride_w: usize_of(t(1, 1)),
            stride_h: usize_of(t(2, 1)),
            depth_multiplier: usize_of(t(3, 1)),
            activation: act(4),
            dilation_w: usize_of(t(5, 1)),
            dilation_h: usize_of(t(6, 1)),
        }),
        B::TransposeConv => OpOptions::Conv(ConvOptions {
            padding: Padding::from_code(i8f(0)),
            stride_w: usize_of(t(1, 1)),
            stride_h: usize_of(t(2, 1)),
            activation: act(3),
            dilation_w: 1,
            dilation_h: 1,
            depth_multiplier: 1,
        }),
        B::AveragePool2d | B::MaxPool2d | B::L2Pool2d => OpOptions::Pool(PoolOptions {
            padding: Padding::from_code(i8f(0)),
            stride_w: usize_of(t(1, 1)),
            stride_h: usize_of(t(2, 1)),
            filter_w: usize_of(t(3, 1)),
            filter_h: usize_of(t(4, 1)),
            activation: act(5),
        }),
        B::FullyConnected => OpOptions::FullyConnected {
            activation: act(0),
            weights_format: i8f(1),
            keep_num_dims: b(2),
            asymmetric_quantize_inputs: b(3),
        },
        B::Add | B::Sub | B::Mul | B::Div => OpOptions::Activation(act(0)),
        B::Concatenation => OpOptions::Concatenation {
            axis: t(0, 0),
            activation: act(1),
        },
        B::Reshape => OpOptions::Reshape {
            new_shape: table.and_then(|t| t.vector::<i32>(0)),
        },
        B::Mean
        | B::Sum
        | B::ReduceMax
        | B::ReduceMin
        | B::ReduceProd
        | B::ReduceAny
        | B::ReduceAll => OpOptions::Reducer { keep_dims: b(0) },
        B::Softmax => OpOptions::Softmax { beta: f(0, 1.0) },
        B::LeakyRelu => OpOptions::LeakyRelu { alpha: f(0, 0.0) },
        B::ResizeBilinear => OpOptions::Resize {
            align_corners: b(2),
            half_pixel_centers: b(3),
        },
        B::ResizeNearestNeighbor => OpOptions::Resize {
            align_corners: b(0),
            half_pixel_centers: b(1),
        },
        B::DepthToSpace | B::SpaceToDepth => OpOptions::DepthToSpace {
            block_size: usize_of(t(0, 1)),
        },
        B::StridedSlice => OpOptions::StridedSlice(StridedSliceOptions {
            begin_mask: t(0, 0),
            end_mask: t(1, 0),
            ellipsis_mask: t(2, 0),
            new_axis_mask: t(3, 0),
            shrink_axis_mask: t(4, 0),
            offset: b(5),
        }),
        B::Split | B::SplitV => OpOptions::Split {
            num_splits: usize_of(t(0, 0)),
        },
        B::Squeeze => OpOptions::Squeeze {
            dims: table.and_then(|t| t.vector::<i32>(0)).unwrap_or_default(),
        },
        B::Gather => OpOptions::Gather {
            axis: t(0, 0),
            batch_dims: t(1, 0),
        },
        B::Pack => OpOptions::Pack {
            values_count: usize_of(t(0, 0)),
            axis: t(1, 0),
        },
        B::Unpack => OpOptions::Unpack {
            num: usize_of(t(0, 0)),
            axis: t(1, 0),
        },
        B::MirrorPad => OpOptions::MirrorPad {
            mode: if i8f(0) == 1 {
                MirrorPadMode::Symmetric
            } else {
                MirrorPadMode::Reflect
            },
        },
        B::BatchMatmul => OpOptions::BatchMatmul {
            adj_x: b(0),
            adj_y: b(1),
            asymmetric_quantize_inputs: b(2),
        },
        B::If => OpOptions::If {
            then_subgraph: usize_of(t(0, 0)),
            else_subgraph: usize_of(t(1, 0)),
        },
        B::While => OpOptions::While {
            cond_subgraph: usize_of(t(0, 0)),
            body_subgraph: usize_of(t(1, 0)),
        },
        B::CallOnce => OpOptions::CallOnce {
            init_subgraph: usize_of(t(0, 0)),
        },
        B::VarHandle => OpOptions::VarHandle {
            container: table.and_then(|t| t.string(0)).unwrap_or("").to_string(),
            shared_name: table.and_then(|t| t.string(1)).unwrap_or("").to_string(),
        },
        B::Gelu => OpOptions::Gelu { approximate: b(0) },
        B::ArgMax | B::ArgMin => OpOptions::ArgMinMax {
            output_type: DType::from_schema(i8f(0)).unwrap_or(DType::F32),
        },
        B::Cast => OpOptions::Cast {
            in_type: DType::from_schema(i8f(0)).unwrap_or(DType::F32),
            out_type: DType::from_schema(i8f(1)).unwrap_or(DType::F32),
        },
        B::LocalResponseNormalization => OpOptions::LocalResponseNorm {
            radius: t(0, 0),
            bias: f(1, 0.0),
            alpha: f(2, 0.0),
            beta: f(3, 0.0),
        },
        B::L2Normalization => OpOptions::Activation(act(0)),
        B::UnidirectionalSequenceLstm => OpOptions::Lstm(LstmOptions {
            activation: act(0),
            cell_clip: f(1, 0.0),
            proj_clip: f(2, 0.0),
            time_major: b(3),
            asymmetric_quantize_inputs: b(4),
        }),
        _ => OpOptions::None,
    }
}

/// Subgraphs a control-flow node calls, for validation and planning.
pub fn called_subgraphs(options: &OpOptions) -> Vec<usize> {
    match options {
        OpOptions::If {
            then_subgraph,
            else_subgraph,
        } => vec![*then_subgraph, *else_subgraph],
        OpOptions::While {
            cond_subgraph,
            body_subgraph,
        } => vec![*cond_subgraph, *body_subgraph],
        OpOptions::CallOnce { init_subgraph } => vec![*init_subgraph],
        _ => vec![],
    }
}

/// One field of an options table, for writing models.
#[derive(Clone, Debug, PartialEq)]
pub enum OptionField {
    I8(i8),
    I32(i32),
    F32(f32),
    Bool(bool),
    VecI32(Vec<i32>),
    Str(String),
}

/// An options table to write: the `BuiltinOptions` union tag and the fields by id.
#[derive(Clone, Debug, PartialEq)]
pub struct EncodedOptions {
    pub union_type: u8,
    pub fields: Vec<(u16, OptionField)>,
}

/// The inverse of [`decode_options`]: the table (and union tag) that encodes `options`
/// for `op`. Field ids are the same as the decoder's, so the two cannot drift apart
/// unnoticed: the builder tests round-trip every variant.
pub fn encode_options(op: BuiltinOp, options: &OpOptions) -> Option<EncodedOptions> {
    use OptionField::*;
    let i = |v: usize| I32(v as i32);
    let (union_type, fields) = match (op, options) {
        (BuiltinOp::Conv2d, OpOptions::Conv(c)) => (
            1,
            vec![
                (0, I8(c.padding.code())),
                (1, i(c.stride_w)),
                (2, i(c.stride_h)),
                (3, I8(c.activation.code())),
                (4, i(c.dilation_w)),
                (5, i(c.dilation_h)),
            ],
        ),
        (BuiltinOp::DepthwiseConv2d, OpOptions::Conv(c)) => (
            2,
            vec![
                (0, I8(c.padding.code())),
                (1, i(c.stride_w)),
                (2, i(c.stride_h)),
                (3, i(c.depth_multiplier)),
                (4, I8(c.activation.code())),
                (5, i(c.dilation_w)),
                (6, i(c.dilation_h)),
            ],
        ),
        (BuiltinOp::TransposeConv, OpOptions::Conv(c)) => (
            49,
            vec![
                (0, I8(c.padding.code())),
                (1, i(c.stride_w)),
                (2, i(c.stride_h)),
                (3, I8(c.activation.code())),
            ],
        ),
        (
            BuiltinOp::AveragePool2d | BuiltinOp::MaxPool2d | BuiltinOp::L2Pool2d,
            OpOptions::Pool(p),
        ) => (
            5,
            vec![
                (0, I8(p.padding.code())),
                (1, i(p.stride_w)),
                (2, i(p.stride_h)),
                (3, i(p.filter_w)),
                (4, i(p.filter_h)),
                (5, I8(p.activation.code())),
            ],
        ),
        (
            BuiltinOp::FullyConnected,
            OpOptions::FullyConnected {
                activation,
                keep_num_dims,
                weights_format,
                asymmetric_quantize_inputs,
            },
        ) => (
            8,
            vec![
                (0, I8(activation.code())),
                (1, I8(*weights_format)),
                (2, Bool(*keep_num_dims)),
                (3, Bool(*asymmetric_quantize_inputs)),
            ],
        ),
        (BuiltinOp::Softmax, OpOptions::Softmax { beta }) => (9, vec![(0, F32(*beta))]),
        (BuiltinOp::Concatenation, OpOptions::Concatenation { axis, activation }) => {
            (10, vec![(0, I32(*axis)), (1, I8(activation.code()))])
        }
        (BuiltinOp::Add, OpOptions::Activation(a)) => (11, vec![(0, I8(a.code()))]),
        (BuiltinOp::Mul, OpOptions::Activation(a)) => (21, vec![(0, I8(a.code()))]),
        (BuiltinOp::Sub, OpOptions::Activation(a)) => (28, vec![(0, I8(a.code()))]),
        (BuiltinOp::Div, OpOptions::Activation(a)) => (29, vec![(0, I8(a.code()))]),
        (
            BuiltinOp::ResizeBilinear,
            OpOptions::Resize {
                align_corners,
                half_pixel_centers,
            },
        ) => (
            15,
            vec![(2, Bool(*align_corners)), (3, Bool(*half_pixel_centers))],
        ),
        (
            BuiltinOp::ResizeNearestNeighbor,
            OpOptions::Resize {
                align_corners,
                half_pixel_centers,
            },
        ) => (
            74,
            vec![(0, Bool(*align_corners)), (1, Bool(*half_pixel_centers))],
        ),
        (BuiltinOp::Reshape, OpOptions::Reshape { new_shape }) => (
            17,
            new_shape.iter().map(|s| (0, VecI32(s.clone()))).collect(),
        ),
        (BuiltinOp::SpaceToDepth, OpOptions::DepthToSpace { block_size }) => {
            (19, vec![(0, i(*block_size))])
        }
        (BuiltinOp::DepthToSpace, OpOptions::DepthToSpace { block_size }) => {
            (94, vec![(0, i(*block_size))])
        }
        (BuiltinOp::Gather, OpOptions::Gather { axis, batch_dims }) => {
            (23, vec![(0, I32(*axis)), (1, I32(*batch_dims))])
        }
        (BuiltinOp::Pack, OpOptions::Pack { values_count, axis }) => {
            (59, vec![(0, i(*values_count)), (1, I32(*axis))])
        }
        (BuiltinOp::Unpack, OpOptions::Unpack { num, axis }) => {
            (64, vec![(0, i(*num)), (1, I32(*axis))])
        }
        (BuiltinOp::MirrorPad, OpOptions::MirrorPad { mode }) => (
            77,
            vec![(0, I8(i8::from(*mode == MirrorPadMode::Symmetric)))],
        ),
        (
            BuiltinOp::Mean
            | BuiltinOp::Sum
            | BuiltinOp::ReduceMax
            | BuiltinOp::ReduceMin
            | BuiltinOp::ReduceProd
            | BuiltinOp::ReduceAny
            | BuiltinOp::ReduceAll,
            OpOptions::Reducer { keep_dims },
        ) => (27, vec![(0, Bool(*keep_dims))]),
        (BuiltinOp::Squeeze, OpOptions::Squeeze { dims }) => (30, vec![(0, VecI32(dims.clone()))]),
        (BuiltinOp::StridedSlice, OpOptions::StridedSlice(s)) => (
            32,
            vec![
                (0, I32(s.begin_mask)),
                (1, I32(s.end_mask)),
                (2, I32(s.ellipsis_mask)),
                (3, I32(s.new_axis_mask)),
                (4, I32(s.shrink_axis_mask)),
                (5, Bool(s.offset)),
            ],
        ),
        (BuiltinOp::Split, OpOptions::Split { num_splits }) => (35, vec![(0, i(*num_splits))]),
        (BuiltinOp::SplitV, OpOptions::Split { num_splits }) => (79, vec![(0, i(*num_splits))]),
        (BuiltinOp::LeakyRelu, OpOptions::LeakyRelu { alpha }) => (75, vec![(0, F32(*alpha))]),
        (BuiltinOp::UnidirectionalSequenceLstm, OpOptions::Lstm(l)) => (
            71,
            vec![
                (0, I8(l.activation.code())),
                (1, F32(l.cell_clip)),
                (2, F32(l.proj_clip)),
                (3, Bool(l.time_major)),
                (4, Bool(l.asymmetric_quantize_inputs)),
            ],
        ),
        (
            BuiltinOp::If,
            OpOptions::If {
                then_subgraph,
                else_subgraph,
            },
        ) => (92, vec![(0, i(*then_subgraph)), (1, i(*else_subgraph))]),
        (
            BuiltinOp::While,
            OpOptions::While {
                cond_subgraph,
                body_subgraph,
            },
        ) => (93, vec![(0, i(*cond_subgraph)), (1, i(*body_subgraph))]),
        (
            BuiltinOp::BatchMatmul,
            OpOptions::BatchMatmul {
                adj_x,
                adj_y,
                asymmetric_quantize_inputs,
            },
        ) => (
            101,
            vec![
                (0, Bool(*adj_x)),
                (1, Bool(*adj_y)),
                (2, Bool(*asymmetric_quantize_inputs)),
            ],
        ),
        (BuiltinOp::CallOnce, OpOptions::CallOnce { init_subgraph }) => {
            (103, vec![(0, i(*init_subgraph))])
        }
        (
            BuiltinOp::VarHandle,
            OpOptions::VarHandle {
                container,
                shared_name,
            },
        ) => (
            111,
            vec![(0, Str(container.clone())), (1, Str(shared_name.clone()))],
        ),
        (BuiltinOp::Gelu, OpOptions::Gelu { approximate }) => (116, vec![(0, Bool(*approximate))]),
        (BuiltinOp::ArgMax, OpOptions::ArgMinMax { output_type }) => {
            (40, vec![(0, I8(output_type.schema_code()))])
        }
        (BuiltinOp::ArgMin, OpOptions::ArgMinMax { output_type }) => {
            (57, vec![(0, I8(output_type.schema_code()))])
        }
        (BuiltinOp::Cast, OpOptions::Cast { in_type, out_type }) => (
            37,
            vec![
                (0, I8(in_type.schema_code())),
                (1, I8(out_type.schema_code())),
            ],
        ),
        (
            BuiltinOp::LocalResponseNormalization,
            OpOptions::LocalResponseNorm {
                radius,
                bias,
                alpha,
                beta,
            },
        ) => (
            13,
            vec![
                (0, I32(*radius)),
                (1, F32(*bias)),
                (2, F32(*alpha)),
                (3, F32(*beta)),
            ],
        ),
        (BuiltinOp::L2Normalization, OpOptions::Activation(a)) => (12, vec![(0, I8(a.code()))]),
        _ => return None,
    };
    Some(EncodedOptions { union_type, fields })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::ModelBuilder;
    use crate::model::Model;

    /// Options added for the coverage ops (ARG_MAX/ARG_MIN, CAST, LRN, L2_NORMALIZATION)
    /// survive a write and a read.
    #[test]
    fn coverage_op_options_round_trip() {
        let cases = [
            (
                BuiltinOp::ArgMax,
                OpOptions::ArgMinMax {
                    output_type: DType::I64,
                },
            ),
            (
                BuiltinOp::ArgMin,
                OpOptions::ArgMinMax {
                    output_type: DType::I32,
                },
            ),
            (
                BuiltinOp::Cast,
                OpOptions::Cast {
                    in_type: DType::I8,
                    out_type: DType::F32,
                },
            ),
            (
                BuiltinOp::LocalResponseNormalization,
                OpOptions::LocalResponseNorm {
                    radius: 2,
                    bias: 1.0,
                    alpha: 0.5,
                    beta: 0.75,
                },
            ),
            (
                BuiltinOp::L2Normalization,
                OpOptions::Activation(Activation::Relu6),
            ),
        ];
        for (op, options) in cases {
            let mut mb = ModelBuilder::new();
            let sg = mb.main();
            let x = sg.tensor("x", DType::F32, &[2]);
            let y = sg.tensor("y", DType::F32, &[2]);
            sg.op(OpKind::Builtin(op), &[Some(x)], &[y], options.clone());
            sg.set_inputs(&[x]);
            sg.set_outputs(&[y]);
            let m = Model::from_bytes(&mb.finish()).expect("model reads back");
            assert_eq!(m.subgraphs[0].nodes[0].options, options, "{op:?}");
        }
    }
}
