#!/usr/bin/env python3
"""Per-role system calls after each thread installed its seccomp filter, from `strace -f -Y` output
(see scripts/seccomp-derive.sh)."""
import re, sys, collections
LINE = re.compile(r'^(\d+)<([^>]*)> (.*)$')
CALL = re.compile(r'^([a-z0-9_]+)\((.*)')
def role(comm):
    if comm == 'squib' or comm == 'fc_stdin': return 'vmm'
    if comm == 'fc_api': return 'api'
    if comm.startswith('fc_vcpu'): return 'vcpu'
    return None
DETAIL = {'ioctl':1,'fcntl':1,'futex':1,'socket':0,'madvise':2,'mmap':None,'tgkill':2,'tkill':1,'prctl':0,'rt_sigaction':0,
          'timerfd_create':0,'clone3':0,'clone':0,'rt_sigprocmask':0,'setsockopt':1,'getsockopt':1,'eventfd2':1,'openat':2,'mprotect':2,'epoll_create1':0,'socketpair':0,'accept4':3,'timerfd_settime':1,'io_uring_register':1,'fallocate':1,'sendmsg':2,'recvmsg':2,'msync':2}
def split_args(a):
    out=[];depth=0;cur=''
    for ch in a:
        if ch in '({[': depth+=1
        if ch in ')}]': depth-=1
        if ch==',' and depth==0: out.append(cur.strip()); cur=''; continue
        cur+=ch
    if cur.strip(): out.append(cur.strip())
    return out
marked=set(); sets=collections.defaultdict(lambda: collections.defaultdict(collections.Counter)); other=collections.Counter()
for f in sys.argv[1:]:
    for line in open(f, errors='replace'):
        m=LINE.match(line.rstrip('\n'))
        if not m: continue
        tid, comm, rest = m.groups()
        key=(f,tid)
        c=CALL.match(rest)
        if not c: continue
        name, args = c.groups()
        if name=='seccomp' and 'SET_MODE_FILTER' in args:
            marked.add(key); continue
        if key not in marked: continue
        r=role(comm)
        if r is None:
            other[(comm,name)]+=1; continue
        args=args.replace('<unfinished ...>','')
        args=re.sub(r'\) += .*$','',args)
        parts=split_args(args)
        d=''
        if name in DETAIL:
            i=DETAIL[name]
            if name=='mmap' and len(parts)>=4: d=parts[2]+' '+parts[3]
            elif i is not None and len(parts)>i: d=parts[i]
        sets[r][name][d]+=1
for r in ('vmm','api','vcpu'):
    print(f'== {r}: {len(sets[r])} syscalls')
    for name in sorted(sets[r]):
        dd=sets[r][name]
        det=', '.join(f'{k}' for k in sorted(dd) if k)
        print(f'  {name:22s} {sum(dd.values()):7d}  {det}')
if other:
    print('== other threads after a filter:', dict(other))
