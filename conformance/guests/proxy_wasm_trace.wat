;; The proxy-wasm guest that traces the stream callbacks, one template for ABI 0.1.0, 0.2.0
;; and 0.2.1 (a line starting with `;;@V,..` is kept only for those versions, see
;; conformance/src/case.rs). Cases in cases/b_proxy_wasm_trace.yaml.
;;
;; Every stream callback appends `cb:eos:n;` to the stream's trace: `cb` is `rqh`, `rqb`,
;; `rqt`, `rsh`, `rsb` or `rst`; `eos` is the callback's `end_of_stream` (`-` where the
;; callback has none: 0.1.0 header callbacks, trailer callbacks); `n` is the body size for
;; body callbacks, and for header and trailer callbacks `ok` when `num_headers` equals the
;; count of the map `proxy_get_header_map_pairs` gives (else `num_headers/count`), so the
;; trace does not depend on which headers a host adds. `proxy_on_log` logs the whole trace
;; at INFO (`trace <trace>`) and `on_log status=<:status>`; `proxy_on_delete` logs the order
;; of the end callbacks (`order done,log,delete,`). Response headers get `x-served`, the
;; number of streams this instance has run (1: a fresh instance).
;;
;; The `x-test-id` request header picks a behaviour: 1 pauses in request headers and a
;; tick (the 4th, 75 ms apart: 300 ms, well after a case's chunks, 40 ms) resumes the
;; stream (`go;` in the trace); 2..10 trap
;; (`unreachable`) in on_request_headers, on_request_body, on_request_trailers,
;; on_response_headers, on_response_body, on_response_trailers, on_done, on_log, on_delete;
;; 11 pauses in request headers like 1, and the first tick traps; 13 pauses in response
;; headers and the 4th tick resumes the response (`go;`); 12 makes an http call
;; (GET /call to `upstream`, the request's `x-conformance-key` forwarded) and pauses, and
;; proxy_on_http_call_response traps;
;; 20 adds a request trailer `x-added-rt: 1` in the eos request body call and a response
;; trailer `x-added-st: 1` in the eos response body call (no trailers arrived).
;; `proxy_set_buffer_bytes` on the request body in its eos call: 31 (0, size, empty), 32 (0,
;; 0x7fffffff, `new body`), 33 (0x7fffffff, 0, `-post`), 34 (size, 0, `-post`); a non-OK
;; status answers 500 `status:N`. `proxy_send_local_response` in request headers: 40 status
;; 1000, 41 twice (403 `first`, then 404 `second`: a non-OK status of the second logs
;; `send=N`), 43 grpc_status 14 (body `grpc says no`); 42 from on_log (logs `send=N`; the
;; client already has its answer). 50: the request's `x-*` header lines, in order, as the
;; local response body `name=value,...` (names of 3 bytes only: `x-a`, not the runner's or
;; forwarding headers); 51: the response's, in header `x-seen`; 52: `:path`
;; rewritten to `/rewritten?y=2` with `proxy_set_header_map_pairs` (every other pair kept).
;;
;; Memory: constants below 512, out-params at 512/516, digits at 960..1000, the order at
;; 1024 (64 bytes), the trace at 8192 (up to 4096 bytes), a list or map being built at 16384,
;; host allocations bump from 65536 and restart with every stream.
(module
  (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value" (func $get_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_add_header_map_value" (func $add_value (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_pairs" (func $get_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_tick_period_milliseconds" (func $set_tick (param i32) (result i32)))
  (import "env" "proxy_set_effective_context" (func $set_effective_context (param i32) (result i32)))
  (import "env" "proxy_http_call" (func $http_call (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_set_header_map_pairs" (func $set_pairs (param i32 i32 i32) (result i32)))
  (import "env" "proxy_set_buffer_bytes" (func $set_buffer_bytes (param i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_send_local_response" (func $send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  ;;@0.1.0 (import "env" "proxy_continue_request" (func $continue_request (result i32)))
  ;;@0.1.0 (import "env" "proxy_continue_response" (func $continue_response (result i32)))
  ;;@0.2.0,0.2.1 (import "env" "proxy_continue_stream" (func $continue_stream (param i32) (result i32)))

  (memory (export "memory") 2)

  (data (i32.const 16) "x-test-id")    ;; 9
  (data (i32.const 32) "rqh:")         ;; 4 each
  (data (i32.const 36) "rqb:")
  (data (i32.const 40) "rqt:")
  (data (i32.const 44) "rsh:")
  (data (i32.const 48) "rsb:")
  (data (i32.const 52) "rst:")
  (data (i32.const 64) "trace ")       ;; 6
  (data (i32.const 80) "order ")       ;; 6
  (data (i32.const 96) "on_log status=") ;; 14
  (data (i32.const 112) ":status")     ;; 7
  (data (i32.const 128) "x-served")    ;; 8
  (data (i32.const 144) "x-added-rt")  ;; 10
  (data (i32.const 160) "x-added-st")  ;; 10
  (data (i32.const 176) "done,")       ;; 5
  (data (i32.const 184) "log,")        ;; 4
  (data (i32.const 192) "delete,")     ;; 7
  (data (i32.const 200) "go;")         ;; 3
  (data (i32.const 208) "ok")          ;; 2
  (data (i32.const 216) "1")           ;; 1
  (data (i32.const 224) "new body")    ;; 8
  (data (i32.const 232) "-post")       ;; 5
  (data (i32.const 240) "status:")     ;; 7
  (data (i32.const 248) "first")       ;; 5
  (data (i32.const 256) "second")      ;; 6
  (data (i32.const 264) "send=")       ;; 5
  (data (i32.const 272) "x-seen")      ;; 6
  (data (i32.const 280) "/rewritten?y=2") ;; 14
  (data (i32.const 296) "grpc says no") ;; 12
  (data (i32.const 312) "local")       ;; 5
  ;; An http call's headers but the last value, serialized data part: 62 bytes.
  (data (i32.const 320) ":method\00GET\00:path\00/call\00:authority\00upstream\00x-conformance-key\00")
  (data (i32.const 384) "x-conformance-key") ;; 17
  (data (i32.const 408) "upstream")    ;; 8

  (global $heap (mut i32) (i32.const 65536))
  (global $id (mut i32) (i32.const 0))
  (global $tlen (mut i32) (i32.const 0))
  (global $olen (mut i32) (i32.const 0))
  (global $served (mut i32) (i32.const 0))
  (global $ctx (mut i32) (i32.const 0))
  (global $ticks (mut i32) (i32.const 0))

  (func (export "proxy_abi_version_{{abi_version}}"))

  (func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const 131072))
      (then (return (i32.const 0))))
    (global.set $heap (i32.add (local.get $p) (i32.and (i32.add (local.get $size) (i32.const 7)) (i32.const -8))))
    (local.get $p))

  ;; A stream context starts a new trace.
  (func (export "proxy_on_context_create") (param $ctx i32) (param $root i32)
    (if (i32.ne (local.get $root) (i32.const 0))
      (then
        (global.set $heap (i32.const 65536))
        (global.set $id (i32.const 0))
        (global.set $tlen (i32.const 0))
        (global.set $olen (i32.const 0)))))
  (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
  (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))

  (func $put (param $p i32) (param $n i32)
    (memory.copy (i32.add (i32.const 8192) (global.get $tlen)) (local.get $p) (local.get $n))
    (global.set $tlen (i32.add (global.get $tlen) (local.get $n))))

  (func $put_byte (param $b i32)
    (i32.store8 (i32.add (i32.const 8192) (global.get $tlen)) (local.get $b))
    (global.set $tlen (i32.add (global.get $tlen) (i32.const 1))))

  ;; Decimal digits of $v.
  (func $put_num (param $v i32) (local $p i32)
    (local.set $p (i32.const 1000))
    (loop $l
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (br_if $l (local.get $v)))
    (call $put (local.get $p) (i32.sub (i32.const 1000) (local.get $p))))

  ;; `cb:` (the 4 bytes at $name), then the eos (-1: `-`) and `:`.
  (func $head (param $name i32) (param $eos i32)
    (call $put (local.get $name) (i32.const 4))
    (if (i32.lt_s (local.get $eos) (i32.const 0))
      (then (call $put_byte (i32.const 45)))
      (else (call $put_num (local.get $eos))))
    (call $put_byte (i32.const 58)))

  ;; `ok;` when $n is the size of map $map, else `n/count;`.
  (func $count (param $map i32) (param $n i32) (local $c i32)
    (local.set $c (i32.const -1))
    (if (i32.eqz (call $get_pairs (local.get $map) (i32.const 512) (i32.const 516)))
      (then
        (local.set $c (i32.const 0))
        (if (i32.ge_u (i32.load (i32.const 516)) (i32.const 4))
          (then (local.set $c (i32.load (i32.load (i32.const 512))))))))
    (if (i32.eq (local.get $c) (local.get $n))
      (then (call $put (i32.const 208) (i32.const 2)))
      (else
        (call $put_num (local.get $n))
        (call $put_byte (i32.const 47))
        (call $put_num (local.get $c))))
    (call $put_byte (i32.const 59)))

  ;; The x-test-id request header as a number (0 when absent).
  (func $test_id (result i32) (local $p i32) (local $end i32) (local $v i32)
    (if (call $get_value (i32.const 0) (i32.const 16) (i32.const 9) (i32.const 512) (i32.const 516))
      (then (return (i32.const 0))))
    (local.set $p (i32.load (i32.const 512)))
    (local.set $end (i32.add (local.get $p) (i32.load (i32.const 516))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $v (i32.add (i32.mul (local.get $v) (i32.const 10))
          (i32.sub (i32.load8_u (local.get $p)) (i32.const 48))))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $l)))
    (local.get $v))

  ;; The `x-?` pairs (3-byte names) of map $map, `name=value,` each, in order, at the trace's end (the caller
  ;; takes them off again).
  (func $x_pairs (param $map i32) (local $n i32) (local $i i32) (local $sz i32) (local $d i32) (local $kl i32) (local $vl i32)
    (if (call $get_pairs (local.get $map) (i32.const 512) (i32.const 516)) (then (return)))
    (local.set $sz (i32.load (i32.const 512)))
    (local.set $n (i32.load (local.get $sz)))
    (local.set $d (i32.add (i32.add (local.get $sz) (i32.const 4)) (i32.mul (local.get $n) (i32.const 8))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $kl (i32.load (i32.add (local.get $sz) (i32.add (i32.const 4) (i32.mul (local.get $i) (i32.const 8))))))
        (local.set $vl (i32.load (i32.add (local.get $sz) (i32.add (i32.const 8) (i32.mul (local.get $i) (i32.const 8))))))
        (if (i32.and (i32.eq (local.get $kl) (i32.const 3))
              (i32.eq (i32.load16_u (local.get $d)) (i32.const 0x2d78))) ;; "x-"
          (then
            (call $put (local.get $d) (local.get $kl))
            (call $put_byte (i32.const 61))
            (call $put (i32.add (local.get $d) (i32.add (local.get $kl) (i32.const 1))) (local.get $vl))
            (call $put_byte (i32.const 44))))
        (local.set $d (i32.add (local.get $d) (i32.add (i32.add (local.get $kl) (local.get $vl)) (i32.const 2))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l))))

  ;; Request headers again with `:path` set to `/rewritten?y=2`: the map copied pair by pair
  ;; to 16384, then set whole; the status of the set.
  (func $rewrite_path (result i32) (local $n i32) (local $i i32) (local $sz i32) (local $d i32) (local $kl i32) (local $vl i32) (local $o i32) (local $vp i32)
    (if (call $get_pairs (i32.const 0) (i32.const 512) (i32.const 516)) (then (return (i32.const -1))))
    (local.set $sz (i32.load (i32.const 512)))
    (local.set $n (i32.load (local.get $sz)))
    (local.set $d (i32.add (i32.add (local.get $sz) (i32.const 4)) (i32.mul (local.get $n) (i32.const 8))))
    (i32.store (i32.const 16384) (local.get $n))
    (local.set $o (i32.add (i32.const 16388) (i32.mul (local.get $n) (i32.const 8))))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $kl (i32.load (i32.add (local.get $sz) (i32.add (i32.const 4) (i32.mul (local.get $i) (i32.const 8))))))
        (local.set $vl (i32.load (i32.add (local.get $sz) (i32.add (i32.const 8) (i32.mul (local.get $i) (i32.const 8))))))
        (local.set $vp (i32.add (local.get $d) (i32.add (local.get $kl) (i32.const 1))))
        ;; `:path` (5 bytes): the new value instead.
        (if (i32.and (i32.eq (local.get $kl) (i32.const 5))
              (i32.and (i32.eq (i32.load (local.get $d)) (i32.const 0x7461703a)) ;; ":pat"
                (i32.eq (i32.load8_u (i32.add (local.get $d) (i32.const 4))) (i32.const 104)))) ;; "h"
          (then
            (local.set $vp (i32.const 280))
            (local.set $vl (i32.const 14))))
        (i32.store (i32.add (i32.const 16388) (i32.mul (local.get $i) (i32.const 8))) (local.get $kl))
        (i32.store (i32.add (i32.const 16392) (i32.mul (local.get $i) (i32.const 8))) (local.get $vl))
        (memory.copy (local.get $o) (local.get $d) (local.get $kl))
        (i32.store8 (i32.add (local.get $o) (local.get $kl)) (i32.const 0))
        (local.set $o (i32.add (local.get $o) (i32.add (local.get $kl) (i32.const 1))))
        (memory.copy (local.get $o) (local.get $vp) (local.get $vl))
        (i32.store8 (i32.add (local.get $o) (local.get $vl)) (i32.const 0))
        (local.set $o (i32.add (local.get $o) (i32.add (local.get $vl) (i32.const 1))))
        (local.set $d (i32.add (local.get $d)
          (i32.add (i32.add (local.get $kl) (i32.load (i32.add (local.get $sz) (i32.add (i32.const 8) (i32.mul (local.get $i) (i32.const 8)))))) (i32.const 2))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (call $set_pairs (i32.const 0) (i32.const 16384) (i32.sub (local.get $o) (i32.const 16384))))

  ;; A local response: status $st, body ($p, $n), no headers, grpc_status $g.
  (func $local (param $st i32) (param $p i32) (param $n i32) (param $g i32) (result i32)
    (call $send_local_response (local.get $st) (i32.const 312) (i32.const 5) (local.get $p) (local.get $n)
      (i32.const 0) (i32.const 0) (local.get $g)))

  ;; 500 `status:N` for a non-OK status $r (and 1: stop); else 0.
  (func $fail_on (param $r i32) (result i32) (local $n i32)
    (if (i32.eqz (local.get $r)) (then (return (i32.const 0))))
    (local.set $n (global.get $tlen))
    (call $put (i32.const 240) (i32.const 7))
    (call $put_num (local.get $r))
    (drop (call $local (i32.const 500) (i32.add (i32.const 8192) (local.get $n)) (i32.sub (global.get $tlen) (local.get $n)) (i32.const -1)))
    (global.set $tlen (local.get $n))
    (i32.const 1))

  ;; Logs `send=N`.
  (func $log_send (param $r i32) (local $n i32)
    (local.set $n (global.get $tlen))
    (call $put (i32.const 264) (i32.const 5))
    (call $put_num (local.get $r))
    (drop (call $log (i32.const 2) (i32.add (i32.const 8192) (local.get $n)) (i32.sub (global.get $tlen) (local.get $n))))
    (global.set $tlen (local.get $n)))

  ;; Test 12: the http call; its status.
  (func $call_upstream (result i32) (local $kl i32)
    (if (call $get_value (i32.const 0) (i32.const 384) (i32.const 17) (i32.const 512) (i32.const 516))
      (then (return (i32.const -1))))
    (local.set $kl (i32.load (i32.const 516)))
    (i32.store (i32.const 16384) (i32.const 4))
    (i32.store (i32.const 16388) (i32.const 7))
    (i32.store (i32.const 16392) (i32.const 3))
    (i32.store (i32.const 16396) (i32.const 5))
    (i32.store (i32.const 16400) (i32.const 5))
    (i32.store (i32.const 16404) (i32.const 10))
    (i32.store (i32.const 16408) (i32.const 8))
    (i32.store (i32.const 16412) (i32.const 17))
    (i32.store (i32.const 16416) (local.get $kl))
    (memory.copy (i32.const 16420) (i32.const 320) (i32.const 62))
    (memory.copy (i32.const 16482) (i32.load (i32.const 512)) (local.get $kl))
    (i32.store8 (i32.add (i32.const 16482) (local.get $kl)) (i32.const 0))
    (call $http_call (i32.const 408) (i32.const 8)
      (i32.const 16384) (i32.add (i32.const 99) (local.get $kl))
      (i32.const 0) (i32.const 0) (i32.const 0) (i32.const 0)
      (i32.const 5000) (i32.const 520)))

  (func $trap_if (param $want i32)
    (if (i32.eq (global.get $id) (local.get $want)) (then unreachable)))

  ;;@0.1.0 (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (result i32)
  ;;@0.1.0   (call $head (i32.const 32) (i32.const -1))
  ;;@0.2.0,0.2.1 (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
  ;;@0.2.0,0.2.1   (call $head (i32.const 32) (local.get $eos))
    (call $count (i32.const 0) (local.get $n))
    (global.set $served (i32.add (global.get $served) (i32.const 1)))
    (global.set $id (call $test_id))
    (call $trap_if (i32.const 2))
    (if (i32.eq (global.get $id) (i32.const 40)) (then
      (drop (call $fail_on (call $local (i32.const 1000) (i32.const 312) (i32.const 5) (i32.const -1))))
      (return (i32.const 1))))
    (if (i32.eq (global.get $id) (i32.const 41)) (then
      (drop (call $local (i32.const 403) (i32.const 248) (i32.const 5) (i32.const -1)))
      (local.set $n (call $local (i32.const 404) (i32.const 256) (i32.const 6) (i32.const -1)))
      (if (local.get $n) (then (call $log_send (local.get $n))))
      (return (i32.const 1))))
    (if (i32.eq (global.get $id) (i32.const 43)) (then
      (drop (call $fail_on (call $local (i32.const 200) (i32.const 296) (i32.const 12) (i32.const 14))))
      (return (i32.const 1))))
    (if (i32.eq (global.get $id) (i32.const 50)) (then
      (local.set $n (global.get $tlen))
      (call $x_pairs (i32.const 0))
      (drop (call $local (i32.const 200) (i32.add (i32.const 8192) (local.get $n)) (i32.sub (global.get $tlen) (local.get $n)) (i32.const -1)))
      (global.set $tlen (local.get $n))
      (return (i32.const 1))))
    (if (i32.eq (global.get $id) (i32.const 12)) (then
      (if (call $fail_on (call $call_upstream)) (then (return (i32.const 1))))
      (return (i32.const 1))))
    (if (i32.eq (global.get $id) (i32.const 52)) (then
      (return (call $fail_on (call $rewrite_path)))))
    (if (i32.or (i32.eq (global.get $id) (i32.const 1)) (i32.eq (global.get $id) (i32.const 11)))
      (then
        (global.set $ctx (local.get $ctx))
        (global.set $ticks (i32.const 0))
        (drop (call $set_tick (i32.const 75)))
        (return (i32.const 1))))
    (i32.const 0))

  (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $head (i32.const 36) (local.get $eos))
    (call $put_num (local.get $size))
    (call $put_byte (i32.const 59))
    (call $trap_if (i32.const 3))
    (if (local.get $eos) (then
      (if (i32.eq (global.get $id) (i32.const 31)) (then
        (return (call $fail_on (call $set_buffer_bytes (i32.const 0) (i32.const 0) (local.get $size) (i32.const 224) (i32.const 0))))))
      (if (i32.eq (global.get $id) (i32.const 32)) (then
        (return (call $fail_on (call $set_buffer_bytes (i32.const 0) (i32.const 0) (i32.const 0x7fffffff) (i32.const 224) (i32.const 8))))))
      (if (i32.eq (global.get $id) (i32.const 33)) (then
        (return (call $fail_on (call $set_buffer_bytes (i32.const 0) (i32.const 0x7fffffff) (i32.const 0) (i32.const 232) (i32.const 5))))))
      (if (i32.eq (global.get $id) (i32.const 34)) (then
        (return (call $fail_on (call $set_buffer_bytes (i32.const 0) (local.get $size) (i32.const 0) (i32.const 232) (i32.const 5))))))))
    (if (i32.and (local.get $eos) (i32.eq (global.get $id) (i32.const 20)))
      (then (drop (call $add_value (i32.const 1) (i32.const 144) (i32.const 10) (i32.const 216) (i32.const 1)))))
    (i32.const 0))

  (func (export "proxy_on_request_trailers") (param $ctx i32) (param $n i32) (result i32)
    (call $head (i32.const 40) (i32.const -1))
    (call $count (i32.const 1) (local.get $n))
    (call $trap_if (i32.const 4))
    (i32.const 0))

  ;;@0.1.0 (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (result i32)
  ;;@0.1.0   (call $head (i32.const 44) (i32.const -1))
  ;;@0.2.0,0.2.1 (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
  ;;@0.2.0,0.2.1   (call $head (i32.const 44) (local.get $eos))
    (call $count (i32.const 2) (local.get $n))
    (call $trap_if (i32.const 5))
    (if (i32.eq (global.get $id) (i32.const 13)) (then
      (global.set $ctx (local.get $ctx))
      (global.set $ticks (i32.const 0))
      (drop (call $set_tick (i32.const 75)))
      (return (i32.const 1))))
    (if (i32.eq (global.get $id) (i32.const 51)) (then
      (local.set $n (global.get $tlen))
      (call $x_pairs (i32.const 2))
      (drop (call $add_value (i32.const 2) (i32.const 272) (i32.const 6)
        (i32.add (i32.const 8192) (local.get $n)) (i32.sub (global.get $tlen) (local.get $n))))
      (global.set $tlen (local.get $n))))
    (local.set $n (global.get $tlen))
    (call $put_num (global.get $served))
    (drop (call $add_value (i32.const 2) (i32.const 128) (i32.const 8)
      (i32.add (i32.const 8192) (local.get $n)) (i32.sub (global.get $tlen) (local.get $n))))
    (global.set $tlen (local.get $n))
    (i32.const 0))

  (func (export "proxy_on_response_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
    (call $head (i32.const 48) (local.get $eos))
    (call $put_num (local.get $size))
    (call $put_byte (i32.const 59))
    (call $trap_if (i32.const 6))
    (if (i32.and (local.get $eos) (i32.eq (global.get $id) (i32.const 20)))
      (then (drop (call $add_value (i32.const 3) (i32.const 160) (i32.const 10) (i32.const 216) (i32.const 1)))))
    (i32.const 0))

  (func (export "proxy_on_response_trailers") (param $ctx i32) (param $n i32) (result i32)
    (call $head (i32.const 52) (i32.const -1))
    (call $count (i32.const 3) (local.get $n))
    (call $trap_if (i32.const 7))
    (i32.const 0))

  (func $order (param $p i32) (param $n i32)
    (memory.copy (i32.add (i32.const 1024) (global.get $olen)) (local.get $p) (local.get $n))
    (global.set $olen (i32.add (global.get $olen) (local.get $n))))

  (func (export "proxy_on_done") (param $ctx i32) (result i32)
    (if (i32.eqz (global.get $tlen)) (then (return (i32.const 1))))
    (call $order (i32.const 176) (i32.const 5))
    (call $trap_if (i32.const 8))
    (i32.const 1))

  (func (export "proxy_on_log") (param $ctx i32) (local $n i32)
    ;; Root contexts have no trace.
    (if (i32.eqz (global.get $tlen)) (then (return)))
    (call $order (i32.const 184) (i32.const 4))
    (call $trap_if (i32.const 9))
    (if (i32.eq (global.get $id) (i32.const 42)) (then
      (call $log_send (call $local (i32.const 403) (i32.const 248) (i32.const 5) (i32.const -1)))))
    (local.set $n (global.get $tlen))
    (call $put (i32.const 64) (i32.const 6))
    (call $put (i32.const 8192) (local.get $n))
    (drop (call $log (i32.const 2) (i32.add (i32.const 8192) (local.get $n)) (i32.sub (global.get $tlen) (local.get $n))))
    (global.set $tlen (local.get $n))
    (call $put (i32.const 96) (i32.const 14))
    (if (i32.eqz (call $get_value (i32.const 2) (i32.const 112) (i32.const 7) (i32.const 512) (i32.const 516)))
      (then (call $put (i32.load (i32.const 512)) (i32.load (i32.const 516)))))
    (drop (call $log (i32.const 2) (i32.add (i32.const 8192) (local.get $n)) (i32.sub (global.get $tlen) (local.get $n))))
    (global.set $tlen (local.get $n)))

  (func (export "proxy_on_delete") (param $ctx i32)
    (if (i32.eqz (global.get $tlen)) (then (return)))
    (call $order (i32.const 192) (i32.const 7))
    (call $trap_if (i32.const 10))
    (global.set $tlen (i32.const 0))
    (call $put (i32.const 80) (i32.const 6))
    (call $put (i32.const 1024) (global.get $olen))
    (drop (call $log (i32.const 2) (i32.const 8192) (global.get $tlen)))
    (global.set $tlen (i32.const 0)))

  (func (export "proxy_on_http_call_response") (param i32 i32 i32 i32 i32)
    (call $trap_if (i32.const 12)))

  ;; Test 1: the 4th tick resumes the paused request.
  (func (export "proxy_on_tick") (param $root i32)
    (local $resp i32)
    (call $trap_if (i32.const 11))
    (local.set $resp (i32.eq (global.get $id) (i32.const 13)))
    (if (i32.and (i32.ne (global.get $id) (i32.const 1)) (i32.eqz (local.get $resp))) (then (return)))
    (global.set $ticks (i32.add (global.get $ticks) (i32.const 1)))
    (if (i32.lt_u (global.get $ticks) (i32.const 4)) (then (return)))
    (drop (call $set_tick (i32.const 0)))
    (global.set $id (i32.const 0))
    (drop (call $set_effective_context (global.get $ctx)))
    (call $put (i32.const 200) (i32.const 3))
    (if (local.get $resp) (then
      ;;@0.1.0 (drop (call $continue_response))
      ;;@0.2.0,0.2.1 (drop (call $continue_stream (i32.const 1)))
      (return)))
    ;;@0.1.0 (drop (call $continue_request))
    ;;@0.2.0,0.2.1 (drop (call $continue_stream (i32.const 0)))
  )
)
