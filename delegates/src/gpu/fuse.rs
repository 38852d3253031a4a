//! Fusion: an elementwise dispatch (an activation, or a binary op such as a residual
//! ADD, PRELU's per-channel slope, the MUL of a gate) moves into the epilogue of the
//! dispatch that produces its input, so the intermediate is never written and the
//! dispatch disappears.
//!
//! A consumer `E` reading `v` (same shape as `E`'s output) fuses into the dispatches
//! that write `v` when `v` is an intermediate read by `E` alone and not a partition
//! output, and everything else `E` reads is complete before the first of them runs
//! (its other operand, lined up with the output element by element, per channel or as
//! a scalar). The writers then write `E`'s output. Chains fuse one link at a time, in
//! run order, so CONV_2D → ADD → RELU becomes one dispatch.

use super::ir::{Bcast, Dispatch, Elementwise, EpiOp, Value, ValueId, ValueKind};

/// How `operand` lines up with an output of shape `out`, if it does.
fn bcast(operand: &[usize], out: &[usize]) -> Option<Bcast> {
    if operand == out {
        return Some(Bcast::Full);
    }
    let n: usize = operand.iter().product();
    if n == 1 {
        return Some(Bcast::Scalar);
    }
    let channels = *out.last()?;
    let last = *operand.last()?;
    let leading_ones = operand[..operand.len() - 1].iter().all(|&d| d == 1);
    (last == channels && leading_ones && operand.len() <= out.len()).then_some(Bcast::Channel)
}

fn is_intermediate(values: &[Value], v: ValueId) -> bool {
    values
        .get(v)
        .is_some_and(|x| matches!(x.kind, ValueKind::Intermediate))
}

/// Fuses elementwise dispatches into their producers; `outputs` are the values the
/// partition hands back, `max_bindings` the storage buffers one dispatch may bind.
pub(crate) fn fuse(
    dispatches: Vec<Dispatch>,
    values: &[Value],
    outputs: &[ValueId],
    max_bindings: usize,
) -> Vec<Dispatch> {
    let mut ds: Vec<Option<Dispatch>> = dispatches.into_iter().map(Some).collect();
    let mut uses = vec![0usize; values.len()];
    let mut writers: Vec<Vec<usize>> = vec![Vec::new(); values.len()];
    for (i, d) in ds.iter().flatten().enumerate() {
        for v in d.reads() {
            uses[v] += 1;
        }
        writers[d.output].push(i);
    }
    for &v in outputs {
        uses[v] += 1;
    }
    // Complete before dispatch `at` runs: constants, inputs, and values whose writers
    // all come earlier.
    let ready_before = |writers: &Vec<Vec<usize>>, v: ValueId, at: usize| -> bool {
        !is_intermediate(values, v) || writers[v].iter().all(|&w| w < at)
    };
    for e in 0..ds.len() {
        let Some(d) = &ds[e] else { continue };
        let Some(kind) = d.fusable else { continue };
        let out_shape = &values[d.output].shape;
        // (source, core op, the other operand's binding)
        let mut choices: Vec<(ValueId, EpiOp, Option<ValueId>)> = Vec::new();
        match kind {
            Elementwise::Unary { op, alpha, x } => {
                choices.push((x, EpiOp::Unary { op, alpha }, None));
            }
            Elementwise::Binary { op, a, b } => {
                for (src, other, operand_first) in [(a, b, false), (b, a, true)] {
                    if src == other || values[src].shape != *out_shape {
                        continue;
                    }
                    if let Some(bc) = bcast(&values[other].shape, out_shape) {
                        choices.push((
                            src,
                            EpiOp::Binary {
                                op,
                                operand: other,
                                bcast: bc,
                                operand_first,
                            },
                            Some(other),
                        ));
                    }
                }
            }
        }
        let e_reads: Vec<ValueId> = d.epilogue_operands();
        let mut applied = None;
        for (src, core, other) in choices {
            if !is_intermediate(values, src) || uses[src] != 1 || values[src].shape != *out_shape {
                continue;
            }
            let ws = writers[src].clone();
            let Some(&first) = ws.iter().min() else {
                continue;
            };
            if ws.iter().any(|&w| w >= e) {
                continue;
            }
            let extra: Vec<ValueId> = other.into_iter().chain(e_reads.iter().copied()).collect();
            if extra
                .iter()
                .any(|&v| v == src || !ready_before(&writers, v, first))
            {
                continue;
            }
            let fits = ws.iter().all(|&w| {
                ds[w].as_ref().is_some_and(|wd| {
                    wd.inputs.len() + 2 + wd.epilogue_operands().len() + extra.len() <= max_bindings
                })
            });
            if !fits {
                continue;
            }
            applied = Some((src, core, ws));
            break;
        }
        let Some((src, core, ws)) = applied else {
            continue;
        };
        let Some(consumer) = ds[e].take() else {
            continue;
        };
        let channels = out_shape.last().copied().unwrap_or(1) as u32;
        let mut ops = vec![core];
        ops.extend(consumer.epilogue.iter().cloned());
        let per_channel = ops.iter().any(|o| {
            matches!(
                o,
                EpiOp::Binary {
                    bcast: Bcast::Channel,
                    ..
                }
            )
        });
        for &w in &ws {
            if let Some(wd) = ds[w].as_mut() {
                wd.output = consumer.output;
                wd.epilogue.extend(ops.iter().cloned());
                wd.nodes.extend(consumer.nodes.iter().copied());
                wd.ops.extend(consumer.ops.iter().cloned());
                if per_channel && !wd.constants.iter().any(|(k, _)| *k == "EPI_C") {
                    wd.constants.push(("EPI_C", channels));
                }
            }
        }
        uses[src] = 0;
        writers[src].clear();
        writers[consumer.output] = ws;
    }
    ds.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::ir::Grid;
    use crate::gpu::pipelines::{BINARY, CONV2D, UNARY};

    fn value(shape: &[usize], kind: ValueKind) -> Value {
        Value {
            shape: shape.to_vec(),
            kind,
        }
    }

    fn unary(x: ValueId, out: ValueId) -> Dispatch {
        let mut d = Dispatch::new(&UNARY, vec![x], out, vec![], Grid::Threads(1));
        d.fusable = Some(Elementwise::Unary {
            op: 0,
            alpha: 0.0,
            x,
        });
        d.ops = vec!["RELU".into()];
        d
    }

    fn binary(a: ValueId, b: ValueId, out: ValueId) -> Dispatch {
        let mut d = Dispatch::new(&BINARY, vec![a, b], out, vec![], Grid::Threads(1));
        d.fusable = Some(Elementwise::Binary { op: 0, a, b });
        d.ops = vec!["ADD".into()];
        d
    }

    fn conv(x: ValueId, out: ValueId) -> Dispatch {
        let mut d = Dispatch::new(&CONV2D, vec![x], out, vec![], Grid::Threads(1));
        d.ops = vec!["CONV_2D".into()];
        d
    }

    #[test]
    fn conv_add_relu_becomes_one_dispatch() {
        // 0: input; 1: conv out; 2: add out; 3: relu out
        let values = vec![
            value(&[1, 4, 4, 8], ValueKind::Input(0)),
            value(&[1, 4, 4, 8], ValueKind::Intermediate),
            value(&[1, 4, 4, 8], ValueKind::Intermediate),
            value(&[1, 4, 4, 8], ValueKind::Intermediate),
        ];
        let ds = vec![conv(0, 1), binary(1, 0, 2), unary(2, 3)];
        let out = fuse(ds, &values, &[3], 8);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].output, 3);
        assert_eq!(out[0].label(), "CONV_2D+ADD+RELU");
        assert_eq!(out[0].epilogue_operands(), vec![0]);
        assert!(
            out[0]
                .epilogue_code()
                .contains("binary_op(0u, v, f32(e0[i]))")
        );
    }

    #[test]
    fn a_value_read_twice_or_handed_back_is_not_fused_away() {
        let values = vec![
            value(&[8], ValueKind::Input(0)),
            value(&[8], ValueKind::Intermediate),
            value(&[8], ValueKind::Intermediate),
            value(&[8], ValueKind::Intermediate),
        ];
        // conv out (1) is read by relu and by the add: the relu stays out of the conv
        // (the add may still fuse into the relu, reading 1 as its operand).
        let ds = vec![conv(0, 1), unary(1, 2), binary(1, 2, 3)];
        let out = fuse(ds, &values, &[3], 8);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].label(), out[0].output), ("CONV_2D".to_string(), 1));
        assert_eq!(out[1].label(), "RELU+ADD");
        // conv out handed back as a partition output: the relu stays.
        let ds = vec![conv(0, 1), unary(1, 2)];
        assert_eq!(fuse(ds, &values, &[1, 2], 8).len(), 2);
    }

    #[test]
    fn an_operand_computed_after_the_producer_blocks_fusion() {
        let values = vec![
            value(&[8], ValueKind::Input(0)),
            value(&[8], ValueKind::Intermediate),
            value(&[8], ValueKind::Intermediate),
            value(&[8], ValueKind::Intermediate),
        ];
        // 1 = conv(0); 2 = conv(0) (after 1); 3 = 1 + 2: 3 may fuse into the writer of 2
        // (1 is ready before it) but not into the writer of 1.
        let ds = vec![conv(0, 1), conv(0, 2), binary(1, 2, 3)];
        let out = fuse(ds, &values, &[3], 8);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].output, 3);
        assert!(
            out[1]
                .epilogue_code()
                .contains("binary_op(0u, f32(e0[i]), v)")
        );
    }

    #[test]
    fn per_channel_operands_set_the_channel_count() {
        let values = vec![
            value(&[1, 2, 2, 3], ValueKind::Input(0)),
            value(&[1, 2, 2, 3], ValueKind::Intermediate),
            value(&[1, 1, 3], ValueKind::Const(vec![0.1, 0.2, 0.3])),
            value(&[1, 2, 2, 3], ValueKind::Intermediate),
        ];
        let ds = vec![conv(0, 1), binary(1, 2, 3)];
        let out = fuse(ds, &values, &[3], 8);
        assert_eq!(out.len(), 1);
        assert!(out[0].constants.contains(&("EPI_C", 3)));
        assert!(out[0].epilogue_code().contains("i % EPI_C"));
        assert_eq!(bcast(&[2, 3], &[1, 2, 2, 3]), None);
    }
}
