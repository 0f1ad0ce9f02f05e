;; The proxy-wasm guest of cases/d_body_after_headers.yaml (issue 17, part 1): the response
;; body changes size after the response headers were continued. One template for ABI 0.1.0,
;; 0.2.0 and 0.2.1 (a line starting with `;;@V,..` is kept only for those versions, see
;; conformance/src/case.rs).
;;
;; proxy_on_request_headers keeps the request's `x-test-id` per stream context (read there:
;; Envoy answers BAD_ARGUMENT to request-header reads in the response phase).
;; proxy_on_response_headers continues, so the head, with the upstream's Content-Length, may
;; go downstream before any body callback. Every proxy_on_response_body call replaces the
;; chunk it sees (`proxy_set_buffer_bytes(HTTP_RESPONSE_BODY, 0, size, ...)`): the stream's
;; first call with the test's text, the later ones with nothing, so the whole body becomes
;; that text however the upstream's body was cut into chunks. Test 1: `a body longer than the
;; upstream's` (33 bytes); 2: `short` (5 bytes); 3: nothing. A non-OK status of
;; proxy_set_buffer_bytes is logged at WARN (`set_buffer_bytes=N`). Other ids continue.
;;
;; Memory: constants below 512, out-params at 512/516, per-context state at 1024 (one i32
;; per context id modulo 256: the test id, bit 8 set once the text was written), host
;; allocations bump from 65536 and restart with every request-headers call.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 2)

  (data (i32.const 16) "x-test-id")                          ;; 9
  (data (i32.const 32) "a body longer than the upstream's")  ;; 33
  (data (i32.const 80) "short")                              ;; 5
  (data (i32.const 96) "set_buffer_bytes=")                  ;; 17

  (global $heap (mut i32) (i32.const 65536))

  (func (export "proxy_abi_version_{{abi_version}}"))

  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 131072))
      (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $p) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))

  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_done") (param i32) (result i32) (i32.const 1))

  ;; Where the state of stream context $ctx lives.
  (func $slot (param $ctx i32) (result i32)
    (i32.add (i32.const 1024) (i32.shl (i32.and (local.get $ctx) (i32.const 255)) (i32.const 2))))

  ;; The request's `x-test-id` as a number (0 when absent or not digits).
  (func $test_id (result i32)
    (local $p i32) (local $n i32) (local $i i32) (local $v i32) (local $c i32)
    (global.set $heap (i32.const 65536))
    (if (call $get_value (i32.const 0) (i32.const 16) (i32.const 9) (i32.const 512) (i32.const 516))
      (then (return (i32.const 0))))
    (local.set $p (i32.load (i32.const 512)))
    (local.set $n (i32.load (i32.const 516)))
    (block $done
      (loop $digits
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $c (i32.sub (i32.load8_u (i32.add (local.get $p) (local.get $i))) (i32.const 48)))
        (if (i32.gt_u (local.get $c) (i32.const 9)) (then (return (i32.const 0))))
        (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10)) (local.get $c)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $digits)))
    (local.get $v))

  (func $request_headers (param $ctx i32) (result i32)
    (i32.store (call $slot (local.get $ctx)) (call $test_id))
    (i32.const 0))
  ;;@0.1.0 (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (result i32)
  ;;@0.1.0   (call $request_headers (local.get $ctx)))
  ;;@0.2.0,0.2.1 (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
  ;;@0.2.0,0.2.1   (call $request_headers (local.get $ctx)))

  ;; CONTINUE: the head may go downstream now.
  ;;@0.1.0 (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (result i32)
  ;;@0.1.0   (i32.const 0))
  ;;@0.2.0,0.2.1 (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
  ;;@0.2.0,0.2.1   (i32.const 0))

  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (local $slot i32) (local $state i32) (local $id i32) (local $ptr i32) (local $len i32) (local $st i32)
    (local.set $slot (call $slot (local.get $ctx)))
    (local.set $state (i32.load (local.get $slot)))
    (local.set $id (i32.and (local.get $state) (i32.const 255)))
    (if (i32.or (i32.lt_u (local.get $id) (i32.const 1)) (i32.gt_u (local.get $id) (i32.const 3)))
      (then (return (i32.const 0))))
    ;; The text goes in the stream's first body call only.
    (if (i32.eqz (i32.and (local.get $state) (i32.const 256)))
      (then
        (if (i32.eq (local.get $id) (i32.const 1))
          (then (local.set $ptr (i32.const 32)) (local.set $len (i32.const 33))))
        (if (i32.eq (local.get $id) (i32.const 2))
          (then (local.set $ptr (i32.const 80)) (local.set $len (i32.const 5))))
        (i32.store (local.get $slot) (i32.or (local.get $state) (i32.const 256)))))
    (local.set $st (call $set_buffer_bytes (i32.const 1) (i32.const 0) (local.get $size)
      (local.get $ptr) (local.get $len)))
    (if (local.get $st)
      (then
        (i32.store8 (i32.const 113) (i32.add (i32.const 48) (i32.rem_u (local.get $st) (i32.const 10))))
        (drop (call $log (i32.const 3) (i32.const 96) (i32.const 18)))))
    (i32.const 0))
)
