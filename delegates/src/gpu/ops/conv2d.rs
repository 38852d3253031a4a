//! CONV_2D on float32: NHWC input, OHWI filter (a constant is repacked at compile to
//! [taps][channels], so a tile's channels are contiguous, for the tiled implicit GEMM; a
//! filter known only at run time is read as it is), optional bias, fused activation.

use switchyard_interpreter::OpOptions;

use super::{NodeView, activation_code, count_u32, groups_1d, u32_of};
use crate::cpu::util::conv_output_size;
use crate::gpu::ir::{Dispatch, Grid, Lowering};
use crate::gpu::pipelines::CONV2D;

struct Plan {
    activation: u32,
    params: Vec<u32>,
    out_channels: usize,
    taps: usize,
    /// Threads along channels (TN) and pixels (TM) of the 4x4-per-thread tile.
    tn: u32,
    tm: u32,
    pointwise: bool,
    groups: [u32; 3],
}

/// Invocations along the channels of a tile: enough for `channels` in blocks of 4,
/// at most 8 (a 32 x 32 tile), at least 2 (a 128-pixel tile).
fn threads_along_channels(channels: usize) -> u32 {
    match channels {
        0..=8 => 2,
        9..=16 => 4,
        _ => 8,
    }
}

fn plan(v: &NodeView<'_>) -> Result<Plan, String> {
    v.expect_arity(2, 3, 1)?;
    let OpOptions::Conv(o) = &v.node.options else {
        return Err("CONV_2D without convolution options".into());
    };
    let x = v.f32_input(0)?;
    let w = v.f32_input(1)?;
    let out = v.f32_output(0)?;
    let (&[n, ih, iw, ic], &[oc, kh, kw, wc]) = (x.shape, w.shape) else {
        return Err(format!(
            "input {:?} and filter {:?} must both be rank 4",
            x.shape, w.shape
        ));
    };
    if wc != ic {
        return Err(format!(
            "filter depth {wc} differs from input depth {ic} (grouped convolution)"
        ));
    }
    if let Some(b) = v.optional_input(2) {
        super::expect_f32(&b, "bias")?;
        if b.element_count() != oc {
            return Err(format!(
                "bias has {} values for {oc} channels",
                b.element_count()
            ));
        }
    }
    let (oh, pad_top) =
        conv_output_size(ih, kh, o.stride_h, o.dilation_h, o.padding).map_err(|e| e.to_string())?;
    let (ow, pad_left) =
        conv_output_size(iw, kw, o.stride_w, o.dilation_w, o.padding).map_err(|e| e.to_string())?;
    if out.shape != [n, oh, ow, oc] {
        return Err(format!(
            "output shape {:?} should be {:?}",
            out.shape,
            [n, oh, ow, oc]
        ));
    }
    count_u32(out.shape)?;
    count_u32(x.shape)?;
    let pixels = n * oh * ow;
    let taps = kh * kw * ic;
    let mut params = Vec::with_capacity(17);
    for (value, what) in [
        (n, "batch"),
        (ih, "height"),
        (iw, "width"),
        (ic, "channels"),
        (oh, "height"),
        (ow, "width"),
        (oc, "channels"),
        (kh, "filter height"),
        (kw, "filter width"),
        (o.stride_h, "stride"),
        (o.stride_w, "stride"),
        (o.dilation_h, "dilation"),
        (o.dilation_w, "dilation"),
        (pad_top, "padding"),
        (pad_left, "padding"),
        (pixels, "pixels"),
        (taps, "filter taps"),
    ] {
        params.push(u32_of(value, what)?);
    }
    let tn = threads_along_channels(oc);
    let tm = 64 / tn;
    let pixel_tiles = pixels.div_ceil(4 * tm as usize);
    let channel_tiles = oc.div_ceil(4 * tn as usize);
    let groups = [
        groups_1d(pixel_tiles, "pixel tiles")?,
        groups_1d(channel_tiles, "channel tiles")?,
        1,
    ];
    let pointwise = kh == 1
        && kw == 1
        && o.stride_h == 1
        && o.stride_w == 1
        && pad_top == 0
        && pad_left == 0
        && (oh, ow) == (ih, iw);
    Ok(Plan {
        activation: activation_code(o.activation)?,
        params,
        out_channels: oc,
        taps,
        tn,
        tm,
        pointwise,
        groups,
    })
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let p = plan(v)?;
    let x = l.input(0)?;
    let (oc, taps) = (p.out_channels, p.taps);
    let (w, packed) = match l.const_input(1) {
        // OHWI = [oc][taps] -> [taps][oc].
        Ok(w) => {
            if w.len() != oc * taps {
                return Err(format!(
                    "filter holds {} values, expected {}",
                    w.len(),
                    oc * taps
                ));
            }
            let mut packed = vec![0.0f32; w.len()];
            for o in 0..oc {
                for k in 0..taps {
                    packed[k * oc + o] = w[o * taps + k];
                }
            }
            (l.constant(packed), true)
        }
        Err(_) => (l.input(1)?, false),
    };
    let bias = match v.optional_input(2) {
        Some(_) => l.input(2)?,
        None => l.constant(vec![0.0; oc]),
    };
    let out = l.output(0)?;
    l.dispatch(
        Dispatch::new(
            &CONV2D,
            vec![x, w, bias],
            out,
            p.params,
            Grid::Groups(p.groups),
        )
        .constant("TN", p.tn)
        .constant("TM", p.tm)
        .constant("POINTWISE", u32::from(p.pointwise))
        .constant("PACKED", u32::from(packed))
        .clamp(p.activation),
    );
    Ok(())
}
