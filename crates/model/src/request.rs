//! What a forward pass is asked to do: captures, interventions, how far to run, where to
//! start, and what it returns.

use candle_core::Tensor;

use crate::hook::HookPoint;

/// Which positions of each sequence a capture or intervention touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Positions {
    /// Every padded position, laid out `(b, t, ...)` (pads included).
    All,
    /// These positions of every sequence: negative from the end (-1 = last token),
    /// non-negative from the first real token. Laid out `(b, n, ...)` in this order.
    At(Vec<i64>),
    /// Positions per sequence, as in `At` but a list of its own for each sequence of the batch
    /// (all of one length `n`): where a number's tokens are depends on how many tokens the
    /// numbers before it took. Laid out `(b, n, ...)`.
    Each(Vec<Vec<i64>>),
}

impl Positions {
    /// The last token only.
    pub fn last() -> Self {
        Positions::At(vec![-1])
    }

    /// How many positions of each sequence (of a batch padded to `seq_len`).
    pub fn count(&self, seq_len: usize) -> usize {
        match self {
            Positions::All => seq_len,
            Positions::At(ps) => ps.len(),
            Positions::Each(per) => per.first().map_or(0, Vec::len),
        }
    }

    /// The positions of sequence `seq` (`None` for every position).
    pub fn of(&self, seq: usize) -> Option<&[i64]> {
        match self {
            Positions::All => None,
            Positions::At(ps) => Some(ps),
            Positions::Each(per) => per.get(seq).map(Vec::as_slice),
        }
    }
}

/// Read the activation at a hook.
#[derive(Clone, Debug)]
pub struct Capture {
    /// Where.
    pub hook: HookPoint,
    /// Which positions.
    pub positions: Positions,
}

/// How an intervention changes the activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Set it to the value.
    Replace,
    /// Add the value to it.
    Add,
}

/// Change the activation at a hook before the rest of the forward sees it.
#[derive(Clone, Debug)]
pub struct Intervention {
    /// Where.
    pub hook: HookPoint,
    /// Which positions.
    pub positions: Positions,
    /// Only these indices of the first per-token dimension: heads for `attn.hook_z` and
    /// friends, neurons for `mlp.hook_post`, features for residual hooks. `None` = all.
    pub index: Option<Vec<usize>>,
    /// Replace or add.
    pub edit: Edit,
    /// `(b, n_positions, per-token shape with the indexed dimension cut to index.len())`.
    pub value: Tensor,
}

/// How many logits to return.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Logits {
    /// None: the forward stops after the last layer a hook needs.
    #[default]
    None,
    /// `(b, vocab)` at each sequence's last token.
    Last,
    /// `(b, t, vocab)`.
    All,
}

/// Start the forward at block `layer` from a given residual stream, instead of embedding the
/// tokens and running the blocks before it (patching sweeps resume at the patched layer).
#[derive(Clone, Debug)]
pub struct Resume {
    /// The first block to run.
    pub layer: usize,
    /// `blocks.{layer}.hook_resid_pre` for every position, `(b, t, d_model)`.
    pub resid: Tensor,
}

/// Everything one forward pass should do besides computing.
#[derive(Clone, Debug, Default)]
pub struct ForwardRequest {
    /// Activations to return, in this order.
    pub captures: Vec<Capture>,
    /// Changes, applied in this order; at a hook, interventions run before captures.
    pub interventions: Vec<Intervention>,
    /// Logits to return.
    pub logits: Logits,
    /// Where to start.
    pub resume: Option<Resume>,
}

impl ForwardRequest {
    /// An empty request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a capture.
    pub fn capture(mut self, hook: HookPoint, positions: Positions) -> Self {
        self.captures.push(Capture { hook, positions });
        self
    }

    /// Adds an intervention that replaces the activation (all indices) at `positions`.
    pub fn replace(mut self, hook: HookPoint, positions: Positions, value: Tensor) -> Self {
        self.interventions.push(Intervention {
            hook,
            positions,
            index: None,
            edit: Edit::Replace,
            value,
        });
        self
    }

    /// Adds an intervention that adds `value` (all indices) at `positions`.
    pub fn add(mut self, hook: HookPoint, positions: Positions, value: Tensor) -> Self {
        self.interventions.push(Intervention {
            hook,
            positions,
            index: None,
            edit: Edit::Add,
            value,
        });
        self
    }

    /// Adds any intervention.
    pub fn intervene(mut self, i: Intervention) -> Self {
        self.interventions.push(i);
        self
    }

    /// Asks for logits.
    pub fn logits(mut self, logits: Logits) -> Self {
        self.logits = logits;
        self
    }

    /// Starts at block `layer` from `resid`.
    pub fn resume(mut self, layer: usize, resid: Tensor) -> Self {
        self.resume = Some(Resume { layer, resid });
        self
    }
}

/// What a forward pass returns.
#[derive(Clone, Debug)]
pub struct ForwardOutput {
    /// Logits, as asked.
    pub logits: Option<Tensor>,
    /// One tensor per capture, in request order, `(b, n_positions, per-token shape...)`.
    pub captures: Vec<Tensor>,
    /// The hook of each capture, in request order.
    pub hooks: Vec<HookPoint>,
    /// The blocks that ran (a forward stops after the last one it needs).
    pub layers_run: std::ops::Range<usize>,
    /// The positions that ran (a forward over a cache runs the positions from the first one
    /// it changes).
    pub positions_run: std::ops::Range<usize>,
    /// The last block the forward ran computed the last position's output alone (the forward
    /// read nothing else there or later).
    pub last_block_last_only: bool,
}

impl ForwardOutput {
    /// The capture at `hook` (the first, if it was asked for twice): looked up by hook, so
    /// the order in which a request lists its captures cannot swap two of them.
    pub fn capture(&self, hook: HookPoint) -> crate::Result<&Tensor> {
        self.hooks
            .iter()
            .position(|h| *h == hook)
            .map(|i| &self.captures[i])
            .ok_or_else(|| crate::ModelError::BadRequest(format!("hook {hook} was not captured")))
    }
}
