/* The demo guest: 64-bit long mode code, assembled with GNU as into a flat binary that the VMM loads at 0x1000.
 *
 * It does deterministic, memory-heavy work: pseudo-random read-modify-write across its work area with a running
 * checksum, printing '.' on COM1 every 2^20 steps and, at the end, the checksum as 16 hex digits and a newline; then it
 * halts. All of its state is in registers and guest RAM, so a live update that saves the vCPU and keeps the RAM lets
 * it finish with the same checksum as an uninterrupted run.
 *
 * Entry (set by the VMM): rdi = first byte of the work area, rsi = 64-bit words in it (< 2^32), rdx = steps, r8 = seed,
 * r15 = the step to wait at (0: none), rbp = the gate: its "arrived" word, then its "release" word. At that step the
 * guest sets "arrived" and spins until the VMM sets "release": a point the VMM can pause the guest at by signal, not by
 * timing. The gate touches neither the checksum nor the work area, so a gated run computes what an ungated one does.
 *
 * With several vCPUs each runs this program on its own slice of the work area, with its own seed and gate, and prints
 * on COM1 (the VMM keeps each vCPU's output apart): they share only the page tables and the code.
 * Build: as --64 -o build/guest.o guest/guest.S && objcopy -O binary -j .text build/guest.o build/guest.bin
 */
    .code64
    .text
    .globl _start
_start:
    xor %r9, %r9                    /* checksum */
    xor %r11, %r11                  /* step */
    mov %rdx, %r12                  /* steps to run */
    movabs $6364136223846793005, %r13
    movabs $1442695040888963407, %r14
step:
    cmp %r12, %r11
    jae report
    cmp %r15, %r11
    je gate
work:
    imul %r13, %r8                  /* x = x * a + c (mod 2^64) */
    add %r14, %r8
    mov %r8, %rax
    shr $32, %rax
    imul %rsi, %rax                 /* (x >> 32) * words: the low 64 bits are exact */
    shr $32, %rax                   /* a word index in [0, words) */
    lea (%rdi,%rax,8), %rbx
    mov (%rbx), %rcx                /* read ... */
    add %r8, %rcx
    rol $13, %rcx                   /* ... modify ... */
    mov %rcx, (%rbx)                /* ... write */
    xor %rcx, %r9
    rol $7, %r9
    inc %r11
    test $0xfffff, %r11
    jnz step
    mov $0x3f8, %dx
    mov $'.', %al
    out %al, %dx
    jmp step
gate:
    test %r15, %r15
    jz work
    movq $1, (%rbp)
wait:
    pause
    cmpq $0, 8(%rbp)
    je wait
    xor %r15, %r15                  /* a gate is passed once */
    jmp work
report:
    mov $0x3f8, %dx
    mov $16, %r10
digit:
    rol $4, %r9
    mov %r9, %rax
    and $0xf, %al
    add $'0', %al
    cmp $'9', %al
    jbe emit
    add $39, %al                    /* past '9': 'a'..'f' */
emit:
    out %al, %dx
    dec %r10
    jnz digit
    mov $'\n', %al
    out %al, %dx
halt:
    hlt
    jmp halt
