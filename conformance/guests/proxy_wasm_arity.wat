;; The proxy-wasm guest for callback arity, one template for ABI 0.1.0, 0.2.0 and 0.2.1 (a line
;; starting with `;;@V,..` is kept only for those versions, see conformance/src/case.rs). Each
;; version exports its header callbacks in the shape the other versions use: 0.1.0 with 3
;; parameters (`end_of_stream` third: the 2020 TinyGo and C++ SDK filters, which MOSN runs),
;; 0.2.x with 2. `proxy_on_request_trailers` has 3 parameters in every version.
;;
;; What the callbacks saw comes back as response headers: `x-request-eos`, `x-response-eos`
;; and `x-trailers-eos` hold `0` or `1`, or `-` when the callback has no `end_of_stream`
;; parameter (or, for trailers, was not called). Arguments shifted by one would show as
;; another byte (a header count is never 0 or 1 here).
;;
;; Memory: constant strings below 128, the header value at 250, host allocations bump from
;; 4096.
(module
  (import "env" "proxy_add_header_map_value" (func $add_value (param i32 i32 i32 i32 i32) (result i32)))

  (memory (export "memory") 1)

  (data (i32.const 16) "x-request-eos")      ;; 13
  (data (i32.const 32) "x-response-eos")     ;; 14
  (data (i32.const 48) "x-trailers-eos")     ;; 14

  (global $heap (mut i32) (i32.const 4096))
  ;; What the callbacks of the stream in flight saw, as ASCII: `0`, `1` or `-`.
  (global $req_eos (mut i32) (i32.const 45))
  (global $trl_eos (mut i32) (i32.const 45))

  (func (export "proxy_abi_version_{{abi_version}}"))

  (func (export "malloc") (param $n i32) (result i32) (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (local.get $p))

  (func (export "proxy_on_context_create") (param i32 i32))

  ;; Response header (name at $np, $nl) set to the one byte $b.
  (func $add_byte (param $np i32) (param $nl i32) (param $b i32)
    (i32.store8 (i32.const 250) (local.get $b))
    (drop (call $add_value (i32.const 2) (local.get $np) (local.get $nl) (i32.const 250) (i32.const 1))))

  ;;@0.1.0 (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
  ;;@0.1.0   (global.set $req_eos (i32.add (i32.const 48) (local.get $eos)))
  ;;@0.2.0,0.2.1 (func (export "proxy_on_request_headers") (param $ctx i32) (param $n i32) (result i32)
  ;;@0.2.0,0.2.1   (global.set $req_eos (i32.const 45))
    (global.set $trl_eos (i32.const 45))
    (i32.const 0))

  (func (export "proxy_on_request_trailers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
    (global.set $trl_eos (i32.add (i32.const 48) (local.get $eos)))
    (i32.const 0))

  ;;@0.1.0 (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (param $eos i32) (result i32)
  ;;@0.1.0   (call $add_byte (i32.const 32) (i32.const 14) (i32.add (i32.const 48) (local.get $eos)))
  ;;@0.2.0,0.2.1 (func (export "proxy_on_response_headers") (param $ctx i32) (param $n i32) (result i32)
  ;;@0.2.0,0.2.1   (call $add_byte (i32.const 32) (i32.const 14) (i32.const 45))
    (call $add_byte (i32.const 16) (i32.const 13) (global.get $req_eos))
    (call $add_byte (i32.const 48) (i32.const 14) (global.get $trl_eos))
    (i32.const 0))
)
