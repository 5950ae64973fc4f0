//! WASM tally modules: a domain may tally its votes with a module of its
//! own, named by the blake3 hash of its bytes and run in wasmtime with fuel
//! and memory limits. Every peer runs the same bytes on the same input and
//! gets the same outcome; a module that traps, runs out of fuel or memory,
//! imports anything, or answers anything but 0, 1 or 2 yields
//! `policy_error`, on every peer alike.
//!
//! The ABI (`docs/governance.md`): the module exports `memory`,
//! `alloc(len: i32) -> i32` and `tally(ptr: i32, len: i32) -> i32`. The host
//! asks `alloc` for room, writes the input there, and calls `tally`, which
//! answers 0 (rejected), 1 (accepted) or 2 (no quorum). The input, little
//! endian: `quorum_percent u32 ‖ approval_percent u32 ‖ count u32`, then per
//! member in DID order `weight i64 ‖ active u8 ‖ vote u8` (0 none, 1 for,
//! 2 against, 3 abstain, 4 block).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use icn_schemas::Did;
use icn_schemas::domain::{Choice, DomainMember, Rules, Vote};
use icn_schemas::tally::Outcome;
use wasmtime::{Config, Engine as Wasm, Instance, Module, Store, StoreLimits, StoreLimitsBuilder};

/// Largest module accepted, in bytes.
pub const MAX_MODULE_BYTES: usize = 1024 * 1024;
/// Fuel one tally may burn: about ten million simple instructions.
pub const FUEL: u64 = 10_000_000;
/// Compiled modules kept in memory at most.
const MAX_COMPILED: usize = 32;
/// Memory one tally may use.
pub const MAX_MEMORY_BYTES: usize = 16 * 1024 * 1024;

/// The tally input of a domain's members and a proposal's votes.
pub fn encode_input(
    rules: &Rules,
    members: &BTreeMap<Did, DomainMember>,
    votes: &BTreeMap<Did, Vote>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + 10 * members.len());
    let percent = |p: i64| u32::try_from(p.clamp(0, i64::from(u32::MAX))).unwrap_or(u32::MAX);
    out.extend_from_slice(&percent(rules.quorum_percent).to_le_bytes());
    out.extend_from_slice(&percent(rules.approval_percent).to_le_bytes());
    out.extend_from_slice(
        &u32::try_from(members.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for (did, m) in members {
        out.extend_from_slice(&m.weight.to_le_bytes());
        out.push(u8::from(m.active));
        out.push(match votes.get(did).map(|v| v.choice) {
            None => 0,
            Some(Choice::For) => 1,
            Some(Choice::Against) => 2,
            Some(Choice::Abstain) => 3,
            Some(Choice::Block) => 4,
        });
    }
    out
}

struct State {
    limits: StoreLimits,
}

/// Compiles and runs tally modules, keeping compiled modules by hash.
pub struct Policies {
    wasm: Wasm,
    compiled: Mutex<HashMap<[u8; 32], Module>>,
}

impl Policies {
    /// A runner whose results depend only on the module and its input:
    /// fuel metering, NaNs canonicalized, no relaxed SIMD (threads are not
    /// compiled into this wasmtime at all).
    pub fn new() -> Result<Policies, String> {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .cranelift_nan_canonicalization(true)
            .wasm_relaxed_simd(false);
        let wasm = Wasm::new(&config).map_err(|e| e.to_string())?;
        Ok(Policies {
            wasm,
            compiled: Mutex::new(HashMap::new()),
        })
    }

    /// Whether `bytes` is a WebAssembly module this runner takes: at most
    /// [`MAX_MODULE_BYTES`], and valid for its configuration.
    pub fn check(&self, bytes: &[u8]) -> Result<(), String> {
        if bytes.len() > MAX_MODULE_BYTES {
            return Err(format!(
                "a tally module has at most {MAX_MODULE_BYTES} bytes, this one {}",
                bytes.len()
            ));
        }
        Module::validate(&self.wasm, bytes)
            .map_err(|e| format!("not a valid WebAssembly module: {e}"))
    }

    /// Runs module `bytes` (whose hash is `hash`) on `input`.
    pub fn tally(&self, hash: &[u8; 32], bytes: &[u8], input: &[u8]) -> Outcome {
        self.run(hash, bytes, input).unwrap_or(Outcome::PolicyError)
    }

    fn run(&self, hash: &[u8; 32], bytes: &[u8], input: &[u8]) -> Option<Outcome> {
        if bytes.len() > MAX_MODULE_BYTES {
            return None;
        }
        let module = {
            let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
            match compiled.get(hash) {
                Some(m) => m.clone(),
                None => {
                    let m = Module::new(&self.wasm, bytes).ok()?;
                    // Domains use a handful of modules; a node that met many
                    // compiles them again rather than keep them all.
                    if compiled.len() >= MAX_COMPILED {
                        compiled.clear();
                    }
                    compiled.insert(*hash, m.clone());
                    m
                }
            }
        };
        let limits = StoreLimitsBuilder::new()
            .memory_size(MAX_MEMORY_BYTES)
            .instances(1)
            .tables(4)
            .table_elements(10_000)
            .memories(1)
            .build();
        let mut store = Store::new(&self.wasm, State { limits });
        store.limiter(|s| &mut s.limits);
        store.set_fuel(FUEL).ok()?;
        // No imports: a module that needs any does not instantiate.
        let instance = Instance::new(&mut store, &module, &[]).ok()?;
        let memory = instance.get_memory(&mut store, "memory")?;
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "alloc")
            .ok()?;
        let tally = instance
            .get_typed_func::<(i32, i32), i32>(&mut store, "tally")
            .ok()?;
        let len = i32::try_from(input.len()).ok()?;
        let ptr = alloc.call(&mut store, len).ok()?;
        memory
            .write(&mut store, usize::try_from(ptr).ok()?, input)
            .ok()?;
        match tally.call(&mut store, (ptr, len)).ok()? {
            0 => Some(Outcome::Rejected),
            1 => Some(Outcome::Accepted),
            2 => Some(Outcome::NoQuorum),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example module of `examples/wasm/two_thirds.wat`.
    const TWO_THIRDS: &str = include_str!("../../examples/wasm/two_thirds.wat");

    fn input(votes: &[(i64, bool, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&50u32.to_le_bytes());
        out.extend_from_slice(&51u32.to_le_bytes());
        out.extend_from_slice(&(votes.len() as u32).to_le_bytes());
        for (weight, active, vote) in votes {
            out.extend_from_slice(&weight.to_le_bytes());
            out.push(u8::from(*active));
            out.push(*vote);
        }
        out
    }

    fn run(module: &str, input: &[u8]) -> Outcome {
        let policies = Policies::new().expect("wasmtime");
        let hash = *blake3::hash(module.as_bytes()).as_bytes();
        policies.tally(&hash, module.as_bytes(), input)
    }

    #[test]
    fn the_example_module_tallies_two_thirds_by_weight() {
        // 3 for, 1 against of 4: 75 % ≥ 2/3.
        let yes = input(&[(1, true, 1), (1, true, 1), (1, true, 1), (1, true, 2)]);
        assert_eq!(run(TWO_THIRDS, &yes), Outcome::Accepted);
        // 2 for, 2 against: 50 %.
        let no = input(&[(1, true, 1), (1, true, 1), (1, true, 2), (1, true, 2)]);
        assert_eq!(run(TWO_THIRDS, &no), Outcome::Rejected);
        // Weight counts: one member of weight 3 for, two against.
        let heavy = input(&[(3, true, 1), (1, true, 2), (1, true, 2)]);
        assert_eq!(run(TWO_THIRDS, &heavy), Outcome::Rejected);
        // 1 of 4 voted: no quorum; inactive members are not eligible.
        let few = input(&[(1, true, 1), (1, true, 0), (1, true, 0), (1, true, 0)]);
        assert_eq!(run(TWO_THIRDS, &few), Outcome::NoQuorum);
        let inactive = input(&[(1, true, 1), (9, false, 0)]);
        assert_eq!(run(TWO_THIRDS, &inactive), Outcome::Accepted);
    }

    #[test]
    fn traps_loops_memory_hogs_imports_and_nonsense_are_policy_errors() {
        let abi = |body: &str| {
            format!(
                r#"(module (memory (export "memory") 1)
                    (func (export "alloc") (param i32) (result i32) i32.const 1024)
                    (func (export "tally") (param i32 i32) (result i32) {body}))"#
            )
        };
        let yes = input(&[(1, true, 1)]);
        assert_eq!(run(&abi("i32.const 1"), &yes), Outcome::Accepted);
        assert_eq!(run(&abi("unreachable"), &yes), Outcome::PolicyError);
        assert_eq!(
            run(&abi("(loop (br 0)) i32.const 1"), &yes),
            Outcome::PolicyError
        );
        assert_eq!(run(&abi("i32.const 7"), &yes), Outcome::PolicyError);
        // Growing memory past the limit fails, and the module then traps.
        let hog = abi(
            "(if (i32.eq (memory.grow (i32.const 1000)) (i32.const -1)) (then unreachable)) i32.const 1",
        );
        assert_eq!(run(&hog, &yes), Outcome::PolicyError);
        let importer = r#"(module (import "env" "f" (func)) (memory (export "memory") 1)
            (func (export "alloc") (param i32) (result i32) i32.const 0)
            (func (export "tally") (param i32 i32) (result i32) i32.const 1))"#;
        assert_eq!(run(importer, &yes), Outcome::PolicyError);
        assert_eq!(run("not a module", &yes), Outcome::PolicyError);
        // The same on a second run: the runner keeps nothing between tallies.
        assert_eq!(run(&abi("unreachable"), &yes), Outcome::PolicyError);
    }
}
