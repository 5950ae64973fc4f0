;; A tally module for ICN governance domains: accepted when two thirds of
;; the weight voting for, against or blocking is for, with the domain's own
;; quorum. Text form of WebAssembly; ICN takes the module as these bytes or
;; as the binary `wat2wasm two_thirds.wat` makes (wabt), or
;; `cargo run -p icn-examples --example tally_module` prints both hashes.
;;
;; The ABI (docs/governance.md): export `memory`, `alloc(len) -> ptr` and
;; `tally(ptr, len) -> 0 rejected | 1 accepted | 2 no quorum`. The input is
;; little endian: quorum_percent u32, approval_percent u32, count u32, then
;; per member weight i64, active u8, vote u8 (0 none, 1 for, 2 against,
;; 3 abstain, 4 block).
(module
  (memory (export "memory") 1)
  (global $next (mut i32) (i32.const 1024))

  ;; Room for the input after the first KiB, growing memory when needed.
  (func (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local $end i32)
    (local.set $ptr (global.get $next))
    (local.set $end (i32.add (local.get $ptr) (local.get $len)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq
              (memory.grow
                (i32.add
                  (i32.div_u
                    (i32.sub (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
                    (i32.const 65536))
                  (i32.const 1)))
              (i32.const -1))
          (then unreachable))))
    (global.set $next (local.get $end))
    (local.get $ptr))

  (func (export "tally") (param $ptr i32) (param $len i32) (result i32)
    (local $quorum i64)
    (local $n i32)
    (local $i i32)
    (local $at i32)
    (local $w i64)
    (local $vote i32)
    (local $eligible i64)
    (local $for i64)
    (local $against i64)
    (local $abstain i64)
    (local $block i64)
    (local.set $quorum (i64.extend_i32_u (i32.load (local.get $ptr))))
    (local.set $n (i32.load (i32.add (local.get $ptr) (i32.const 8))))
    (local.set $at (i32.add (local.get $ptr) (i32.const 12)))
    (block $done
      (loop $member
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        ;; Only active members count.
        (if (i32.load8_u (i32.add (local.get $at) (i32.const 8)))
          (then
            (local.set $w (i64.load (local.get $at)))
            (local.set $eligible (i64.add (local.get $eligible) (local.get $w)))
            (local.set $vote (i32.load8_u (i32.add (local.get $at) (i32.const 9))))
            (if (i32.eq (local.get $vote) (i32.const 1))
              (then (local.set $for (i64.add (local.get $for) (local.get $w)))))
            (if (i32.eq (local.get $vote) (i32.const 2))
              (then (local.set $against (i64.add (local.get $against) (local.get $w)))))
            (if (i32.eq (local.get $vote) (i32.const 3))
              (then (local.set $abstain (i64.add (local.get $abstain) (local.get $w)))))
            (if (i32.eq (local.get $vote) (i32.const 4))
              (then (local.set $block (i64.add (local.get $block) (local.get $w)))))))
        (local.set $at (i32.add (local.get $at) (i32.const 10)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $member)))
    ;; Quorum: participation × 100 ≥ quorum_percent × eligible.
    (if (i64.le_s (local.get $eligible) (i64.const 0))
      (then (return (i32.const 2))))
    (if (i64.lt_s
          (i64.mul
            (i64.add (i64.add (local.get $for) (local.get $against))
                     (i64.add (local.get $abstain) (local.get $block)))
            (i64.const 100))
          (i64.mul (local.get $quorum) (local.get $eligible)))
      (then (return (i32.const 2))))
    ;; Two thirds: 3 × for ≥ 2 × (for + against + block), and for > 0.
    (if (i32.and
          (i64.gt_s (local.get $for) (i64.const 0))
          (i64.ge_s
            (i64.mul (local.get $for) (i64.const 3))
            (i64.mul
              (i64.add (local.get $for) (i64.add (local.get $against) (local.get $block)))
              (i64.const 2))))
      (then (return (i32.const 1))))
    (i32.const 0))
)
