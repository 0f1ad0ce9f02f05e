;; The proxy-wasm guest for VM ids: shared data and shared queues seen by several plugins of
;; one chain (`chain:` cases, cases/c_vm_id.yaml), one template for ABI 0.1.0, 0.2.0 and 0.2.1
;; (a line starting with `;;@V,..` is kept only for those versions, see conformance/src/case.rs).
;;
;; Each plugin of a chain takes its role from its plugin configuration (read in
;; `proxy_on_configure`), not from `x-test-id`, which all of them see alike. The key is the
;; request's `x-conformance-key` (unique per case and engine):
;; - `s VALUE`: sets shared data KEY to VALUE (cas 0), then continues;
;; - `g`: answers 200 with shared data KEY, or `status:N` when the get fails;
;; - `r`: registers shared queue KEY in its own VM id, keeps the id, then continues;
;; - `e VMID`: resolves queue (VMID, KEY) and enqueues KEY into it; answers 200 with the
;;   enqueue status, or `status:N` when resolving fails.
;; `proxy_on_queue_ready` dequeues one item and logs at INFO
;; `queue ready root=R id=I item=ITEM`: R is `ok` when its root argument is this VM's root
;; context, I is `ok` when the queue id is the one `r` got here (the spec: the registering
;; root hears of the queue, with the id it registered).
;;
;; Memory: constant strings below 256, out-params at 512..524, digits below 1000, the
;; configuration at 1024, the key at 1536, the reply at 8192, host allocations bump from 65536
;; and restart with every callback.
(module
  (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  ;;@0.1.0 (import "env" "proxy_get_configuration" (func $get_configuration (param i32 i32) (result i32)))
  ;;@0.2.0,0.2.1 (import "env" "proxy_get_buffer_bytes" (func $get_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_shared_data" (func $get_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_shared_data" (func $set_shared (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_register_shared_queue" (func $register_queue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_resolve_shared_queue" (func $resolve_queue (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_enqueue_shared_queue" (func $enqueue (param i32 i32 i32) (result i32)))
  (import "env" "proxy_dequeue_shared_queue" (func $dequeue (param i32 i32 i32) (result i32)))

  (memory (export "memory") 2)

  (data (i32.const 32) "x-conformance-key")  ;; 17
  (data (i32.const 64) "status:")            ;; 7
  (data (i32.const 80) "none")               ;; 4
  (data (i32.const 96) "queue ready root=")  ;; 17
  (data (i32.const 128) " id=")              ;; 4
  (data (i32.const 136) " item=")            ;; 6
  (data (i32.const 144) "ok")                ;; 2
  (data (i32.const 148) "bad")               ;; 3
  (data (i32.const 160) "queue ready dequeue status:")  ;; 27

  (global $heap (mut i32) (i32.const 65536))
  (global $root_id (mut i32) (i32.const 0))
  (global $config_len (mut i32) (i32.const 0))
  (global $key_len (mut i32) (i32.const 0))
  ;; The id `r` got from proxy_register_shared_queue in this VM.
  (global $qid (mut i32) (i32.const 0))
  (global $out (mut i32) (i32.const 0))

  (func (export "proxy_abi_version_{{abi_version}}"))

  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 131072))
      (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $p) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))

  (func (export "proxy_on_context_create") (param $ctx i32) (param $parent i32)
    (if (i32.eqz (local.get $parent)) (then (global.set $root_id (local.get $ctx)))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))

  ;; Keeps the plugin configuration (at most 256 bytes) at 1024.
  (func (export "proxy_on_configure") (param $root i32) (param $size i32) (result i32)
    (local $s i32) (local $n i32)
    (global.set $heap (i32.const 65536))
    (i32.store (i32.const 512) (i32.const 0))
    (i32.store (i32.const 516) (i32.const 0))
    ;;@0.1.0 (local.set $s (call $get_configuration (i32.const 512) (i32.const 516)))
    ;;@0.2.0,0.2.1 (local.set $s (call $get_buffer_bytes (i32.const 7) (i32.const 0) (local.get $size) (i32.const 512) (i32.const 516)))
    (local.set $n (i32.load (i32.const 516)))
    (if (i32.or (local.get $s) (i32.gt_u (local.get $n) (i32.const 256)))
      (then (local.set $n (i32.const 0))))
    (memory.copy (i32.const 1024) (i32.load (i32.const 512)) (local.get $n))
    (global.set $config_len (local.get $n))
    (i32.const 1))

  ;; ---- reply helpers ----

  (func $emit (param $p i32) (param $n i32)
    (if (i32.gt_u (i32.add (global.get $out) (local.get $n)) (i32.const 4096))
      (then (local.set $n (i32.sub (i32.const 4096) (global.get $out)))))
    (memory.copy (i32.add (i32.const 8192) (global.get $out)) (local.get $p) (local.get $n))
    (global.set $out (i32.add (global.get $out) (local.get $n))))

  (func $emit_num (param $v i32)
    (local $p i32)
    (local.set $p (i32.const 1000))
    (loop $l
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $l (local.get $v)))
    (call $emit (local.get $p) (i32.sub (i32.const 1000) (local.get $p))))

  (func $emit_status (param $s i32)
    (call $emit (i32.const 64) (i32.const 7))
    (call $emit_num (local.get $s)))

  ;; Answers 200 with the assembled reply; the stream stops here.
  (func $reply (result i32)
    (drop (call $send_local_response (i32.const 200) (i32.const 0) (i32.const 0)
      (i32.const 8192) (global.get $out) (i32.const 0) (i32.const 0) (i32.const -1)))
    (i32.const 1))

  ;; The request's `x-conformance-key` (or `none`) at 1536.
  (func $read_key
    (local $n i32)
    (if (call $get_value (i32.const 0) (i32.const 32) (i32.const 17) (i32.const 512) (i32.const 516))
      (then
        (memory.copy (i32.const 1536) (i32.const 80) (i32.const 4))
        (global.set $key_len (i32.const 4))
        (return)))
    (local.set $n (i32.load (i32.const 516)))
    (if (i32.gt_u (local.get $n) (i32.const 256)) (then (local.set $n (i32.const 256))))
    (memory.copy (i32.const 1536) (i32.load (i32.const 512)) (local.get $n))
    (global.set $key_len (local.get $n)))

  ;; The configuration's argument: what follows `X ` (its length; it starts at 1026).
  (func $arg_len (result i32)
    (if (result i32) (i32.gt_u (global.get $config_len) (i32.const 2))
      (then (i32.sub (global.get $config_len) (i32.const 2)))
      (else (i32.const 0))))

  (func $on_request (result i32)
    (local $role i32) (local $s i32)
    (global.set $heap (i32.const 65536))
    (global.set $out (i32.const 0))
    (if (i32.eqz (global.get $config_len)) (then (return (i32.const 0))))
    (local.set $role (i32.load8_u (i32.const 1024)))
    (call $read_key)
    ;; s VALUE: set, continue.
    (if (i32.eq (local.get $role) (i32.const 115)) (then
      (local.set $s (call $set_shared (i32.const 1536) (global.get $key_len) (i32.const 1026) (call $arg_len) (i32.const 0)))
      (if (local.get $s) (then
        (call $emit_status (local.get $s))
        (return (call $reply))))
      (return (i32.const 0))))
    ;; g: answer with the value.
    (if (i32.eq (local.get $role) (i32.const 103)) (then
      (local.set $s (call $get_shared (i32.const 1536) (global.get $key_len) (i32.const 512) (i32.const 516) (i32.const 520)))
      (if (local.get $s)
        (then (call $emit_status (local.get $s)))
        (else (call $emit (i32.load (i32.const 512)) (i32.load (i32.const 516)))))
      (return (call $reply))))
    ;; r: register, continue.
    (if (i32.eq (local.get $role) (i32.const 114)) (then
      (local.set $s (call $register_queue (i32.const 1536) (global.get $key_len) (i32.const 520)))
      (if (local.get $s) (then
        (call $emit_status (local.get $s))
        (return (call $reply))))
      (global.set $qid (i32.load (i32.const 520)))
      (return (i32.const 0))))
    ;; e VMID: resolve in VMID, enqueue the key, answer the status.
    (if (i32.eq (local.get $role) (i32.const 101)) (then
      (local.set $s (call $resolve_queue (i32.const 1026) (call $arg_len) (i32.const 1536) (global.get $key_len) (i32.const 520)))
      (if (local.get $s) (then
        (call $emit_status (local.get $s))
        (return (call $reply))))
      (call $emit_num (call $enqueue (i32.load (i32.const 520)) (i32.const 1536) (global.get $key_len)))
      (return (call $reply))))
    (i32.const 0))

  ;;@0.1.0 (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (result i32)
  ;;@0.2.0,0.2.1 (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (call $on_request))

  (func (export "proxy_on_queue_ready") (param $root i32) (param $q i32)
    (local $s i32)
    (global.set $heap (i32.const 65536))
    (global.set $out (i32.const 0))
    (local.set $s (call $dequeue (local.get $q) (i32.const 512) (i32.const 516)))
    (if (local.get $s) (then
      (call $emit (i32.const 160) (i32.const 27))
      (call $emit_num (local.get $s))
      (drop (call $log (i32.const 2) (i32.const 8192) (global.get $out)))
      (return)))
    (call $emit (i32.const 96) (i32.const 17))
    (if (i32.eq (local.get $root) (global.get $root_id))
      (then (call $emit (i32.const 144) (i32.const 2)))
      (else (call $emit (i32.const 148) (i32.const 3))))
    (call $emit (i32.const 128) (i32.const 4))
    (if (i32.and (i32.ne (global.get $qid) (i32.const 0)) (i32.eq (local.get $q) (global.get $qid)))
      (then (call $emit (i32.const 144) (i32.const 2)))
      (else (call $emit (i32.const 148) (i32.const 3))))
    (call $emit (i32.const 136) (i32.const 6))
    (call $emit (i32.load (i32.const 512)) (i32.load (i32.const 516)))
    (drop (call $log (i32.const 2) (i32.const 8192) (global.get $out))))
)
