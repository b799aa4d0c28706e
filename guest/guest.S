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
 *
 * A vCPU entered with rax = 1 is instead the driver of the demo device (lib/vmm/device.ts has the layout): it takes
 * records the device wrote into buffers it posted, from the used ring, checks each (its sequence number and
 * checksum), posts the buffer again on the available ring, and after rsi records prints its counts (consumed, lost,
 * duplicated, corrupted) as four 16-digit hex numbers and halts. The device finds the buffers through an IOMMU-like
 * table: their descriptors hold device addresses, guest-physical + 2^32.
 * Build: as --64 -o build/guest.o guest/guest.S && objcopy -O binary -j .text build/guest.o build/guest.bin
 */
    .code64
    .text
    .globl _start
_start:
    cmp $1, %rax
    je driver
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

/* The device driver. Layout (guest-physical): available ring at 0x20000 (u32 index, then u32 descriptor numbers from
 * 0x20040), used ring at 0x28000 (u32 index, then {u32 id, u32 length} from 0x28040), descriptors at 0x38000, buffers
 * at 0x80000 (64 bytes each: u64 sequence number, six u64 payload words, u64 checksum), counts at 0x1f000.
 * The queue has 1024 entries. Registers: r10 = next used entry, r11 = expected sequence number, r12 lost, r13
 * duplicated, r14 corrupted, r15 consumed, rsi = records to take. */
    .set QUEUE, 1024
    .set AVAIL, 0x20000
    .set USED, 0x28000
    .set BUFFERS, 0x80000
    .set COUNTS, 0x1f000
driver:
    xor %r10, %r10
    mov $1, %r11
    xor %r12, %r12
    xor %r13, %r13
    xor %r14, %r14
    xor %r15, %r15
next_record:
    cmp %rsi, %r15
    jae driver_done
wait_used:
    mov USED, %eax                  /* the device's used index: x86 keeps its stores in order */
    cmp %eax, %r10d
    jne take
    pause
    jmp wait_used
take:
    mov %r10, %rbx
    and $(QUEUE - 1), %rbx
    mov USED + 0x40(,%rbx,8), %ecx  /* the buffer's descriptor number */
    mov %rcx, %rdi
    shl $6, %rdi
    add $BUFFERS, %rdi              /* the buffer */
    /* checksum: h = seq; for each payload word w: h = rol(h ^ w, 17) * 0x9e3779b97f4a7c15 */
    mov (%rdi), %rax
    mov %rax, %rdx
    movabs $0x9e3779b97f4a7c15, %r8
    mov $1, %r9
sum_word:
    xor (%rdi,%r9,8), %rdx
    rol $17, %rdx
    imul %r8, %rdx
    inc %r9
    cmp $7, %r9
    jb sum_word
    cmp 56(%rdi), %rdx
    je sum_ok
    inc %r14                        /* corrupted */
    jmp repost
sum_ok:
    cmp %r11, %rax
    je in_order
    jb duplicated
    mov %rax, %rdx                  /* a gap: the records in between were lost */
    sub %r11, %rdx
    add %rdx, %r12
    lea 1(%rax), %r11
    jmp repost
duplicated:
    inc %r13
    jmp repost
in_order:
    inc %r11
repost:
    mov AVAIL, %eax
    mov %rax, %rbx
    and $(QUEUE - 1), %rbx
    mov %ecx, AVAIL + 0x40(,%rbx,4) /* the buffer back on the available ring, then the index */
    inc %eax
    mov %eax, AVAIL
    inc %r10
    inc %r15
    jmp next_record
driver_done:
    mov %r15, COUNTS
    mov %r12, COUNTS + 8
    mov %r13, COUNTS + 16
    mov %r14, COUNTS + 24
    mov $0x3f8, %dx
    xor %rbx, %rbx
print_count:
    mov COUNTS(,%rbx,8), %r9
    mov $16, %r10
count_digit:
    rol $4, %r9
    mov %r9, %rax
    and $0xf, %al
    add $'0', %al
    cmp $'9', %al
    jbe count_emit
    add $39, %al
count_emit:
    out %al, %dx
    dec %r10
    jnz count_digit
    mov $' ', %al
    cmp $3, %rbx
    jne count_sep
    mov $'\n', %al
count_sep:
    out %al, %dx
    inc %rbx
    cmp $4, %rbx
    jb print_count
    jmp halt
