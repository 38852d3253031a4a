//! MAX_POOL_2D and AVERAGE_POOL_2D on float32 NHWC. An average over the whole plane
//! (global pooling) runs as a row reduction with one workgroup per output.

use switchyard_interpreter::{BuiltinOp as B, OpOptions, Padding};

use super::{NodeView, activation_code, count_u32, groups_2d, u32_of};
use crate::cpu::util::conv_output_size;
use crate::gpu::ir::{Dispatch, Grid, Lowering};
use crate::gpu::pipelines::{POOL2D, REDUCE_ROWS};

struct Plan {
    op: u32,
    activation: u32,
    params: Vec<u32>,
    /// (batch, plane, channels) of a global average.
    global: Option<(usize, usize, usize)>,
}

fn plan(v: &NodeView<'_>) -> Result<Plan, String> {
    v.expect_arity(1, 1, 1)?;
    let OpOptions::Pool(o) = &v.node.options else {
        return Err("pooling without its options".into());
    };
    let op = match v.node.builtin() {
        Some(B::MaxPool2d) => 0,
        Some(B::AveragePool2d) => 1,
        _ => return Err("not a max or average pool".into()),
    };
    let x = v.f32_input(0)?;
    let out = v.f32_output(0)?;
    let &[n, ih, iw, c] = x.shape else {
        return Err(format!("input {:?} must be rank 4", x.shape));
    };
    let (oh, pad_top) =
        conv_output_size(ih, o.filter_h, o.stride_h, 1, o.padding).map_err(|e| e.to_string())?;
    let (ow, pad_left) =
        conv_output_size(iw, o.filter_w, o.stride_w, 1, o.padding).map_err(|e| e.to_string())?;
    if out.shape != [n, oh, ow, c] {
        return Err(format!(
            "output shape {:?} should be {:?}",
            out.shape,
            [n, oh, ow, c]
        ));
    }
    let mut params = vec![count_u32(out.shape)?];
    for (value, what) in [
        (n, "batch"),
        (ih, "height"),
        (iw, "width"),
        (c, "channels"),
        (oh, "height"),
        (ow, "width"),
        (o.filter_h, "filter height"),
        (o.filter_w, "filter width"),
        (o.stride_h, "stride"),
        (o.stride_w, "stride"),
        (pad_top, "padding"),
        (pad_left, "padding"),
    ] {
        params.push(u32_of(value, what)?);
    }
    let covers_plane = (oh, ow) == (1, 1)
        && o.filter_h >= ih
        && o.filter_w >= iw
        && (o.padding == Padding::Valid || (o.filter_h == ih && o.filter_w == iw));
    Ok(Plan {
        op,
        activation: activation_code(o.activation)?,
        params,
        global: (op == 1 && covers_plane).then_some((n, ih * iw, c)),
    })
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let p = plan(v)?;
    let x = l.input(0)?;
    let out = l.output(0)?;
    let d = match p.global {
        Some((n, plane, c)) => {
            let outputs = u32_of(n * c, "outputs")?;
            Dispatch::new(
                &REDUCE_ROWS,
                vec![x],
                out,
                vec![outputs, u32_of(plane, "plane")?, u32_of(c, "channels")?, 1],
                Grid::Groups(groups_2d(outputs)?),
            )
        }
        None => {
            let count = p.params[0];
            Dispatch::new(&POOL2D, vec![x], out, p.params, Grid::Threads(count))
                .constant("OP", p.op)
        }
    };
    l.dispatch(d.clamp(p.activation));
    Ok(())
}
