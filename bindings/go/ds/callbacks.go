package ds

/*
#include <stddef.h>
#include <stdint.h>
*/
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// goPieceCallback is what C calls for each piece; user carries a cgo.Handle, never a Go pointer.
//
//export goPieceCallback
func goPieceCallback(user unsafe.Pointer, piece *C.char, length C.size_t, token C.int32_t, flags C.uint32_t) C.int {
	state := cgo.Handle(uintptr(user)).Value().(*generation)
	text := C.GoStringN(piece, C.int(length))
	stop := false
	func() {
		// A panic must not unwind through C: catch it, stop, report it after.
		defer func() {
			if r := recover(); r != nil {
				state.panicked = r
				stop = true
			}
		}()
		stop = state.onPiece(Piece{Text: text, Token: int32(token), Reasoning: flags&1 != 0})
	}()
	if stop {
		return 1
	}
	return 0
}
