//! How a loaded model's requests are offered to the arbiter: the placement policy of
//! the serving path. The daemon asks it for each request's stages and reports every
//! served run back; it decides which processors a request may take, what each costs
//! now (learned from served runs, see [`crate::cost`]), and whether the CPU may run it
//! with intra-op threads.
//!
//! Today a request is one stage: the whole model, either with its placement (on the
//! processor that holds most of its expected time) or, for a model placed on an
//! accelerator, entirely on the CPU with the CPU-only variant every such model keeps
//! ready. The arbiter sends each request where it finishes first given the queues.
//! When sessions can run one stage at a time, each placed partition becomes a stage of
//! its own (the plan's partitions are already in run order).

use switchyard_interpreter::ProcessorKind;

use crate::arbiter::{Stage, StageOption, Wide};
use crate::cost::CostModel;
use crate::decide::Decision;

/// Requests shorter than this on one core are never offered intra-op threads: the
/// threads' overhead eats the gain, and every thread count the daemon serves costs a
/// prepared interpreter.
pub const WIDE_MIN_S: f64 = 2e-3;

/// Recent weight below which a learned figure counts as stale: about two half-lives
/// after a single run, six after a full window.
pub const STALE_WEIGHT: f64 = 0.25;

/// Which prepared form of the model a processor choice means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// With its placement (CPU only when nothing was placed).
    Placed,
    /// Everything on the CPU, for a model whose placement uses an accelerator.
    CpuOnly,
}

/// The serving policy of one model.
#[derive(Clone, Debug, PartialEq)]
pub struct ServingPlan {
    /// Hex sha256 of the model: the prefix of its learning keys.
    model: String,
    /// The processor with the most of the placed plan's expected time.
    main: ProcessorKind,
    /// The placement put some partition on an accelerator.
    placed: bool,
    /// Expected seconds with the placement, and all on the CPU (one thread): the
    /// figures until served runs replace them.
    placed_prior_s: f64,
    cpu_prior_s: f64,
    /// Most intra-op threads one request may use on the CPU.
    max_threads: usize,
    /// The learning keys of the two forms, made once (every request looks them up).
    keys: [String; 2],
}

impl ServingPlan {
    /// A model that runs on the CPU only.
    pub fn cpu_only(model: &str, cpu_prior_s: f64, max_threads: usize) -> ServingPlan {
        ServingPlan::new(
            model,
            ProcessorKind::Cpu,
            false,
            cpu_prior_s,
            cpu_prior_s,
            max_threads,
        )
    }

    /// A serving plan from its parts (see the fields).
    pub fn new(
        model: &str,
        main: ProcessorKind,
        placed: bool,
        placed_prior_s: f64,
        cpu_prior_s: f64,
        max_threads: usize,
    ) -> ServingPlan {
        ServingPlan {
            model: model.to_string(),
            main,
            placed,
            placed_prior_s,
            cpu_prior_s,
            max_threads: max_threads.max(1),
            keys: [format!("{model}:placed"), format!("{model}:cpu")],
        }
    }

    /// From the placement decision: the main processor is the one with the most
    /// expected time (measured when known); the CPU figure is the model timed as
    /// served when [`crate::decide::decide`] timed it.
    pub fn from_decision(d: &Decision, max_threads: usize) -> ServingPlan {
        let mut per: Vec<(ProcessorKind, f64)> = Vec::new();
        for p in &d.plan.partitions {
            let t = p.measured_s.unwrap_or(p.expected_s) + p.transfer_s;
            match per.iter_mut().find(|(k, _)| *k == p.processor) {
                Some((_, s)) => *s += t,
                None => per.push((p.processor, t)),
            }
        }
        let main = per
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(ProcessorKind::Cpu, |(k, _)| *k);
        let cpu_prior_s = d
            .cpu
            .as_ref()
            .map_or(d.plan.all_cpu_s, |m| m.total_s)
            .max(1e-6);
        ServingPlan::new(
            &d.info.sha256,
            main,
            !d.placed.is_empty(),
            per.iter().map(|(_, s)| s).sum::<f64>().max(1e-6),
            cpu_prior_s,
            max_threads,
        )
    }

    /// The learning key of a variant.
    pub fn key(&self, variant: Variant) -> &str {
        match variant {
            Variant::Placed => &self.keys[0],
            Variant::CpuOnly => &self.keys[1],
        }
    }

    /// The processor holding most of the placed plan's expected time.
    pub fn main(&self) -> ProcessorKind {
        self.main
    }

    /// The placement put some partition on an accelerator.
    pub fn is_placed(&self) -> bool {
        self.placed
    }

    /// What running on `processor` means for this model.
    pub fn variant(&self, processor: ProcessorKind) -> Variant {
        if self.placed && processor == ProcessorKind::Cpu && self.main != ProcessorKind::Cpu {
            Variant::CpuOnly
        } else {
            Variant::Placed
        }
    }

    fn option(
        &self,
        cost: &CostModel,
        p: ProcessorKind,
        v: Variant,
        prior: f64,
        now: f64,
    ) -> StageOption {
        let key = self.key(v);
        let mut o = match cost.learned(key, p, 1, now) {
            Some(l) => StageOption {
                processor: p,
                service_s: l.seconds,
                measured: l.measured,
                wide: None,
                stale: l.samples < 2 || l.weight < STALE_WEIGHT,
            },
            None => StageOption::prior(p, prior),
        };
        if p == ProcessorKind::Cpu && self.max_threads > 1 && o.service_s >= WIDE_MIN_S {
            let t = self.max_threads;
            o.wide = Some(match cost.learned(key, p, t, now) {
                Some(l) => Wide {
                    threads: t,
                    service_s: l.seconds,
                    measured: l.measured,
                },
                // Until measured: a guess that threads help somewhat, tried only when
                // the cores are idle anyway.
                None => Wide {
                    threads: t,
                    service_s: o.service_s * 0.7,
                    measured: false,
                },
            });
        }
        o
    }

    /// The stages of one request now: where it may run and what each choice costs.
    pub fn stages(&self, cost: &CostModel, now: f64) -> Vec<Stage> {
        let mut options =
            vec![self.option(cost, self.main, Variant::Placed, self.placed_prior_s, now)];
        if self.placed && self.main != ProcessorKind::Cpu {
            options.push(self.option(
                cost,
                ProcessorKind::Cpu,
                Variant::CpuOnly,
                self.cpu_prior_s,
                now,
            ));
        }
        vec![Stage { options }]
    }

    /// Records one served run: the stage ran on `processor` with `threads` threads and
    /// took `seconds` (as the client waited for it: inputs in, outputs out).
    pub fn observe(
        &self,
        cost: &mut CostModel,
        processor: ProcessorKind,
        threads: usize,
        seconds: f64,
        now: f64,
    ) {
        cost.observe_at(
            self.key(self.variant(processor)),
            processor,
            threads,
            seconds,
            now,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::Learning;
    use ProcessorKind::{Cpu, Gpu};
    use switchyard_config::DeviceProfiles;

    fn gpu_plan() -> ServingPlan {
        ServingPlan::new("abc", Gpu, true, 0.004, 0.010, 2)
    }

    #[test]
    fn a_placed_model_offers_its_accelerator_and_the_cpu_and_learns_each() {
        let plan = gpu_plan();
        let mut cost = CostModel::new(DeviceProfiles::default(), Learning::default());
        let s = plan.stages(&cost, 0.0);
        assert_eq!(s.len(), 1);
        let o = &s[0].options;
        assert_eq!((o[0].processor, o[1].processor), (Gpu, Cpu));
        assert!(
            !o[0].measured && !o[1].measured,
            "priors until runs are served"
        );
        assert_eq!(plan.variant(Cpu), Variant::CpuOnly);
        assert_eq!(plan.variant(Gpu), Variant::Placed);
        for i in 0..3 {
            plan.observe(&mut cost, Gpu, 1, 0.006, i as f64 * 0.01);
            plan.observe(&mut cost, Cpu, 1, 0.008, i as f64 * 0.01);
            plan.observe(&mut cost, Cpu, 2, 0.005, i as f64 * 0.01);
        }
        let tiny = ServingPlan::cpu_only("tiny", 1e-3, 2);
        for i in 0..3 {
            tiny.observe(&mut cost, Cpu, 1, 0.0005, i as f64 * 0.01);
        }
        assert_eq!(
            tiny.stages(&cost, 0.03)[0].options[0].wide,
            None,
            "too short to thread"
        );
        let s = plan.stages(&cost, 0.03);
        let o = &s[0].options;
        assert_eq!((o[0].service_s, o[0].measured), (0.006, true));
        assert_eq!((o[1].service_s, o[1].measured), (0.008, true));
        assert_eq!(
            o[1].wide,
            Some(Wide {
                threads: 2,
                service_s: 0.005,
                measured: true
            })
        );
    }

    /// Submits one request of `plan` at `now` with a relative deadline to a fresh
    /// arbiter over two cores, as the daemon does.
    fn admitted(
        plan: &ServingPlan,
        cost: &CostModel,
        now: f64,
        deadline_s: f64,
    ) -> Result<(), crate::arbiter::Refusal> {
        use crate::arbiter::{Arbiter, ArbiterOptions, PriorityClass, Request};
        let mut a = Arbiter::new(&[(Cpu, 2), (Gpu, 1)], ArbiterOptions::default());
        a.submit(
            Request {
                id: 1,
                tenant: "t".into(),
                app: "face".into(),
                class: PriorityClass::Realtime,
                weight: 1.0,
                arrival: now,
                deadline: now + deadline_s,
                stages: plan.stages(cost, now),
            },
            now,
        )
    }

    #[test]
    fn admission_after_a_cold_start() {
        // Face detection: served in ~2.6 ms, but the first run after load took 500 ms.
        let plan = ServingPlan::cpu_only("face", 0.052, 1);
        let mut cost = CostModel::new(DeviceProfiles::default(), Learning::default());
        assert!(
            admitted(&plan, &cost, 0.0, 0.033).is_ok(),
            "never refused on a prior"
        );
        plan.observe(&mut cost, Cpu, 1, 0.500, 0.0);
        assert!(
            admitted(&plan, &cost, 0.6, 0.033).is_ok(),
            "one cold run is no measurement"
        );
        for i in 0..3 {
            plan.observe(&mut cost, Cpu, 1, 0.0026, 0.6 + 0.033 * i as f64);
        }
        assert!(admitted(&plan, &cost, 0.7, 0.033).is_ok());
        // The measured time does refuse what cannot make it.
        assert!(
            admitted(&plan, &cost, 0.7, 0.002)
                .unwrap_err()
                .is_deadline()
        );
    }

    #[test]
    fn recovery_after_a_hang() {
        // A GPU-placed model whose delegate hung on every run for a while (each run
        // waited for the 250 ms timeout), with no CPU alternative measured yet.
        let plan = gpu_plan();
        let mut cost = CostModel::new(DeviceProfiles::default(), Learning::default());
        for i in 0..8 {
            plan.observe(&mut cost, Gpu, 1, 0.004, 0.01 * i as f64);
            plan.observe(&mut cost, Cpu, 1, 0.009, 0.01 * i as f64);
        }
        for i in 0..6 {
            plan.observe(&mut cost, Gpu, 1, 0.25, 1.0 + 0.25 * i as f64);
        }
        // The hang is measured now, so the request goes to the CPU instead...
        let s = plan.stages(&cost, 2.3);
        assert_eq!(s[0].options[0].service_s, 0.25);
        // ...and while only the CPU is fed, the GPU's hang figure fades: after a few
        // half-lives a request may try the GPU again (never refused on it), and two
        // good runs restore it.
        let later = 2.3 + 5.0 * cost.learning().half_life_s;
        let s = plan.stages(&cost, later);
        assert!(!s[0].options[0].measured, "{:?}", s[0].options[0]);
        assert!(admitted(&plan, &cost, later, 0.033).is_ok());
        plan.observe(&mut cost, Gpu, 1, 0.004, later);
        plan.observe(&mut cost, Gpu, 1, 0.004, later + 0.01);
        let s = plan.stages(&cost, later + 0.01);
        assert_eq!(
            (s[0].options[0].service_s, s[0].options[0].measured),
            (0.004, true)
        );
    }

    #[test]
    fn a_cpu_model_has_one_option() {
        let plan = ServingPlan::cpu_only("m", 0.002, 1);
        let cost = CostModel::new(DeviceProfiles::default(), Learning::default());
        let s = plan.stages(&cost, 0.0);
        assert_eq!(s[0].options.len(), 1);
        assert_eq!(s[0].options[0].processor, Cpu);
        assert_eq!(s[0].options[0].wide, None, "one thread at most");
        assert_eq!(plan.variant(Cpu), Variant::Placed);
    }
}
