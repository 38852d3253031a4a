//! DEPTHWISE_CONV_2D on float32: NHWC input, [1, kh, kw, ic * multiplier] filter.
//! Tiled (input patch in workgroup memory) when the patch fits, else one invocation per
//! output element.

use switchyard_interpreter::OpOptions;

use super::{NodeView, activation_code, count_u32, u32_of};
use crate::cpu::util::conv_output_size;
use crate::gpu::ir::{Dispatch, Grid, Lowering};
use crate::gpu::pipelines::{DEPTHWISE_DIRECT, DEPTHWISE_TILED};

/// Floats of the tiled shader's workgroup patch.
const PATCH_MAX: usize = 2048;

struct Plan {
    activation: u32,
    /// The direct shader's parameters (the tiled one's are derived from them).
    dims: [usize; 16],
    out_channels: usize,
}

fn plan(v: &NodeView<'_>) -> Result<Plan, String> {
    v.expect_arity(2, 3, 1)?;
    let OpOptions::Conv(o) = &v.node.options else {
        return Err("DEPTHWISE_CONV_2D without convolution options".into());
    };
    let x = v.f32_input(0)?;
    let w = v.f32_input(1)?;
    let out = v.f32_output(0)?;
    let (&[n, ih, iw, ic], &[1, kh, kw, oc]) = (x.shape, w.shape) else {
        return Err(format!(
            "input {:?} must be rank 4 and filter {:?} [1, h, w, channels]",
            x.shape, w.shape
        ));
    };
    // The multiplier follows from the shapes (some converters leave the option at 0).
    if ic == 0 || oc % ic != 0 {
        return Err(format!(
            "{oc} output channels are not a multiple of {ic} input channels"
        ));
    }
    let multiplier = oc / ic;
    if o.depth_multiplier != 0 && o.depth_multiplier != multiplier {
        return Err(format!(
            "depth_multiplier {} disagrees with the filter ({multiplier})",
            o.depth_multiplier
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
    let dims = [
        n,
        ih,
        iw,
        ic,
        oh,
        ow,
        oc,
        kh,
        kw,
        o.stride_h,
        o.stride_w,
        o.dilation_h,
        o.dilation_w,
        pad_top,
        pad_left,
        multiplier,
    ];
    for d in dims {
        u32_of(d, "dimension")?;
    }
    Ok(Plan {
        activation: activation_code(o.activation)?,
        dims,
        out_channels: oc,
    })
}

pub fn check(v: &NodeView<'_>) -> Result<(), String> {
    plan(v).map(|_| ())
}

/// The tiled shader's channels per tile and its parameters, when its patch fits.
fn tiled(dims: &[usize; 16]) -> Option<(u32, Vec<u32>, [u32; 3])> {
    let [n, _, _, _, oh, ow, oc, kh, kw, sh, sw, dh, dw, ..] = *dims;
    let ct = match oc {
        0..=4 => 4usize,
        5..=8 => 8,
        _ => 16,
    };
    let rt = 64 / ct;
    let patch_h = (rt - 1) * sh + (kh - 1) * dh + 1;
    let patch_w = 3 * sw + (kw - 1) * dw + 1;
    if patch_h.checked_mul(patch_w)?.checked_mul(ct)? > PATCH_MAX {
        return None;
    }
    let tiles_x = ow.div_ceil(4);
    let tiles_y = oh.div_ceil(rt);
    let groups_x = u32::try_from(tiles_x * tiles_y * n).ok()?;
    let groups_y = u32::try_from(oc.div_ceil(ct)).ok()?;
    if groups_x > 65_535 || groups_y > 65_535 {
        return None;
    }
    let mut params: Vec<u32> = dims.iter().map(|&d| d as u32).collect();
    params.extend([
        tiles_x as u32,
        tiles_y as u32,
        patch_h as u32,
        patch_w as u32,
    ]);
    Some((ct as u32, params, [groups_x, groups_y, 1]))
}

pub fn lower(v: &NodeView<'_>, l: &mut Lowering<'_, '_>) -> Result<(), String> {
    let p = plan(v)?;
    let x = l.input(0)?;
    let w = l.input(1)?;
    let bias = match v.optional_input(2) {
        Some(_) => l.input(2)?,
        None => l.constant(vec![0.0; p.out_channels]),
    };
    let out = l.output(0)?;
    let d = match tiled(&p.dims) {
        Some((ct, params, groups)) => Dispatch::new(
            &DEPTHWISE_TILED,
            vec![x, w, bias],
            out,
            params,
            Grid::Groups(groups),
        )
        .constant("CT", ct),
        None => {
            let count = count_u32(&[p.dims[0], p.dims[4], p.dims[5], p.dims[6]])?;
            let mut params = vec![count];
            params.extend(p.dims.iter().map(|&d| d as u32));
            Dispatch::new(
                &DEPTHWISE_DIRECT,
                vec![x, w, bias],
                out,
                params,
                Grid::Threads(count),
            )
        }
    };
    l.dispatch(d.clamp(p.activation));
    Ok(())
}
