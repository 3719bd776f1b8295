-- reserve.lua: book one message in every throttle bucket at the earliest slot they all allow,
-- all or none (sliding log with future booking; the proof is in dispatcher/throttle/redis.py).
-- Called by RedisThrottle.reserve / reserve_many.
-- KEYS[1]        the brand's epoch (keys.throttle_epoch_key)
-- KEYS[1+j]      bucket j (keys.bucket_key), j = 1..nb
-- KEYS[1+nb+k]   the state of the k-th sliding bucket in the order of the buckets (keys.throttle_sum_key):
--                'sum,first,last', see "State" below
-- ARGV[1]        JSON [now_ms, horizon_ms, rid, candidate, inflight, buckets], decoded in one
--                call (cjson): now_ms, false -> Redis TIME; horizon_ms, the latest slot
--                accepted; rid, the member prefix (the reservation id); candidate, the epoch set
--                if the brand has none ('' when the brand's throttle is seeded from the outbox:
--                seed.lua creates the epoch, and no epoch answers {-1, now, now, '', '', ...,
--                0}, taking nothing); inflight, '' or the member prefix ('s<row id>') of the
--                row's in-flight entry from a re-seed, removed first (the row is reserving: it
--                was not sent); buckets, one [kind, limit, L_ms, cost] or, for a calendar
--                bucket, [kind, limit, L_ms, cost, [period starts in ms]] each: kind 'w'
--                (sliding) or 'c' (calendar), L_ms (w: period+grace; c: grace)
-- Returns        {allowed 0/1, slot_ms, now_ms, epoch, charged_1, ..., charged_nb, binding}
--                binding: index j of the bucket that set the slot (the last to move it, or the
--                one beyond the calendar range); 0 when the slot is now (no limit held it back)
--
-- State (fast path): beside its log a sliding bucket keeps 'sum,first,last': sum = the total
-- cost of the log exactly, first <= its oldest entry, last >= its newest entry (absent with an
-- empty log).  The log holds every booking that can still share a window with a new one, so
-- when sum + cost <= limit no window can overflow and the log need not be read; first says
-- whether anything left the log (read once, when trimmed), last whether a booking lies after a
-- candidate slot (the monotone path).  All buckets' states and the epoch are one MGET.  A
-- missing or unreadable state is rebuilt from the log, so a lost state heals itself.
local req = cjson.decode(ARGV[1])
local now, horizon, rid, candidate, inflight = req[1], req[2], req[3], req[4], req[5]
if not now then
  local tm = redis.call('TIME')
  now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
end

local B, nb = {}, #req[6]
local mkeys, nw = {KEYS[1]}, 0
for j = 1, nb do
  local s = req[6][j]
  local b = {key = KEYS[1 + j], kind = s[1], limit = s[2], L = s[3], cost = s[4],
             bounds = s[5]}
  if b.kind == 'w' then
    nw = nw + 1
    b.skey = KEYS[1 + nb + nw]
    mkeys[nw + 1] = b.skey
  else
    b.used = {}
  end
  B[j] = b
end
local got = redis.call('MGET', unpack(mkeys))
-- a brand re-seeded from the outbox after a loss (no candidate): no epoch, no reservation
local epoch = got[1]
if (not epoch) and candidate == '' then
  local out = {-1, now, now, ''}
  for j = 1, nb do out[#out + 1] = '' end
  out[#out + 1] = 0
  return out
end

local function ecost(member) return tonumber(string.match(member, ':(%d+)$')) end
local function lower(S, n, v) -- first index with S[i] >= v
  local lo, hi = 1, n + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if S[mid] < v then lo = mid + 1 else hi = mid end
  end
  return lo
end
local function upper(S, n, v) -- first index with S[i] > v
  local lo, hi = 1, n + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if S[mid] <= v then lo = mid + 1 else hi = mid end
  end
  return lo
end

-- read a sliding bucket's whole log (scores S, prefix costs P), drop the entries that left it
-- (<= now - L) and rebuild its state from what stays
local function wload(b)
  local raw = redis.call('ZRANGE', b.key, 0, -1, 'WITHSCORES')
  local cut = now - b.L
  local S, P, n = {}, {0}, 0
  for i = 1, #raw, 2 do
    local s = tonumber(raw[i + 1])
    if s > cut then
      n = n + 1
      S[n] = s
      P[n + 1] = P[n] + ecost(raw[i])
    end
  end
  if n * 2 < #raw then redis.call('ZREMRANGEBYSCORE', b.key, '-inf', cut) end
  b.S, b.P, b.n = S, P, n
  local last = S[n] or -math.huge
  if b.sum ~= P[n + 1] or b.first ~= S[1] or b.last ~= last then
    b.sum, b.first, b.last, b.dirty = P[n + 1], S[1], last, true
  end
end
-- drop the entries that left the log (<= now - L), oldest first, and find the new oldest one
local TRIM_READ = 8
local function wtrim(b)
  local cut = now - b.L
  local head = redis.call('ZRANGE', b.key, 0, TRIM_READ - 1, 'WITHSCORES')
  local gone, first = 0, nil
  for i = 1, #head, 2 do
    local s = tonumber(head[i + 1])
    if s > cut then first = s; break end
    gone = gone + 1
    b.sum = b.sum - ecost(head[i])
  end
  if first == nil and gone == TRIM_READ then return wload(b) end -- more left: read it all
  if gone > 0 then redis.call('ZREMRANGEBYRANK', b.key, 0, gone - 1) end
  if first == nil then b.sum, b.last = 0, -math.huge end -- the log is empty now
  b.first, b.dirty = first, true
  if b.sum < 0 or (first ~= nil and b.sum <= 0) then wload(b) end -- inconsistent: rebuild
end
-- store a sliding bucket's state, expiring with its log (drop it with an empty log)
local function wsave(b)
  if b.first ~= nil then
    redis.call('SET', b.skey, string.format('%d,%d,%d', b.sum, b.first, b.last),
               'PX', b.last + b.L - now + 1000)
  elseif b.had then
    redis.call('DEL', b.skey)
  end
end

local k = 1
for j = 1, nb do
  local b = B[j]
  if b.kind == 'w' then
    k = k + 1
    local st = got[k]
    b.had = st ~= false
    -- the row reserving was counted as in flight by a re-seed (seed.lua): it was not sent, its
    -- booking replaces that entry (the state is rebuilt from the log)
    if inflight ~= '' and redis.call('ZREM', b.key, inflight .. ':' .. b.cost) == 1 then
      st = false
    end
    local s, f, l
    if st then s, f, l = string.match(st, '^(%d+),(%-?%d+),(%-?%d+)$') end
    if s then
      b.sum, b.first, b.last = tonumber(s), tonumber(f), tonumber(l)
      if b.first <= now - b.L then wtrim(b) end
    else
      wload(b) -- no state (or one from before it held first and last): rebuild it
    end
  end
end

-- sliding: does [x, x+L) stay within limit for every x in (t-L, t] once cost is added at t?
local function wfits(b, t)
  local S, P, n, L = b.S, b.P, b.n, b.L
  local room = b.limit - b.cost
  if P[lower(S, n, t + L)] - P[lower(S, n, t)] > room then return false end
  local i = upper(S, n, t - L)
  while i <= n and S[i] <= t do
    local x = S[i]
    if P[lower(S, n, x + L)] - P[i] > room then return false end
    i = upper(S, n, x)
  end
  return true
end
-- monotone case, every booking at or before t: the windows containing t' >= t hold only
-- entries <= t', the fullest one is (t'-L, t'], and it fits once the oldest entries worth
-- `excess` have left it: t' = max(t, S[k] + L), S[k] the entry where their cost reaches it
-- (at most `excess` entries read, once per call).  nil if the state and the log disagree.
local function wmono(b, t)
  if b.mono == nil then
    local excess = b.sum + b.cost - b.limit
    local head = redis.call('ZRANGE', b.key, 0, excess - 1, 'WITHSCORES')
    local acc = 0
    b.mono = false
    for i = 1, #head, 2 do
      acc = acc + ecost(head[i])
      if acc >= excess then b.mono = tonumber(head[i + 1]) + b.L; break end
    end
  end
  if b.mono then return math.max(t, b.mono) end
  return nil
end
-- earliest t' >= t that fits: t itself or some entry + L (the right end of a full stretch)
local function wnext(b, t)
  if b.sum + b.cost <= b.limit then return t end -- no window can overflow
  if b.S == nil and b.last <= t then
    local t2 = wmono(b, t)
    if t2 ~= nil then return t2 end
  end
  if b.S == nil then wload(b) end
  if wfits(b, t) then return t end
  local S, n = b.S, b.n
  local i = upper(S, n, t - b.L)
  while i <= n do
    local c = S[i] + b.L
    if wfits(b, c) then return c end
    i = upper(S, n, S[i])
  end
  return t -- unreachable: after the last entry + L the window is empty
end

local function cperiod(b, t) -- index p with bounds[p] <= t < bounds[p+1]
  local bd = b.bounds
  for p = 1, #bd - 1 do
    if bd[p] <= t and t < bd[p + 1] then return p end
  end
  return nil
end
local function cused(b, p) -- what period p holds, read once
  local u = b.used[p]
  if u == nil then
    u = tonumber(redis.call('HGET', b.key, tostring(b.bounds[p])) or '0')
    b.used[p] = u
  end
  return u
end
-- the periods a send in [t, t+grace] may count in: p, and p+1 within the grace of its start
-- (nil: beyond the periods given)
local function cfields(b, p, t)
  if t + b.L < b.bounds[p + 1] then return {p} end
  if p + 1 < #b.bounds then return {p, p + 1} end
  return nil
end
-- earliest t' >= t whose periods have room (nil: beyond the periods given); t never falls
-- between calls, so the period index is kept
local function cnext(b, t)
  local bd, n, cost, limit = b.bounds, #b.bounds, b.cost, b.limit
  local p = b.p or 1
  while true do
    while p < n and bd[p + 1] <= t do p = p + 1 end
    if p >= n or t < bd[p] then return nil end
    b.p = p
    if cused(b, p) + cost <= limit then
      if t + b.L < bd[p + 1] then return t end
      if p + 1 >= n then return nil end
      if cused(b, p + 1) + cost <= limit then return t end
    elseif t + b.L >= bd[p + 1] and p + 1 >= n then
      return nil
    end
    t = bd[p + 1]
  end
end

-- the earliest slot every bucket allows: each bucket in turn moves t to the earliest time
-- >= t it allows, until all nb in a row keep it (each move is to a time no later than that
-- slot, so this ends at it)
local t = now
local unknown = false
local binding = 0
local kept, j, steps = 0, 1, 0
while kept < nb do
  local b = B[j]
  local t2
  if b.kind == 'w' then t2 = wnext(b, t) else t2 = cnext(b, t) end
  if t2 == nil then unknown = true; binding = j; break end
  if t2 > t then t = t2; binding = j; kept = 1 else kept = kept + 1 end
  j = j % nb + 1
  steps = steps + 1
  if steps > 100000 then break end
end

if not epoch then
  epoch = candidate
  redis.call('SET', KEYS[1], epoch, 'PX', 172800000)
end

local allowed = 0
if (not unknown) and (t - now <= horizon) then allowed = 1 end
local out = {allowed, t, now, epoch} -- integral ms: integer replies
for j = 1, nb do
  local b = B[j]
  local charged = ''
  if allowed == 1 then
    if b.kind == 'w' then
      redis.call('ZADD', b.key, t, rid .. ':' .. b.cost)
      b.sum = b.sum + b.cost
      if b.first == nil or t < b.first then b.first = t end
      if t > b.last then b.last = t end
      -- last >= every entry: the log lives until its newest entry leaves it (+1 s)
      redis.call('PEXPIRE', b.key, b.last + b.L - now + 1000)
      b.dirty = true
    else
      local p = cperiod(b, t)
      local fs = cfields(b, p, t)
      local names = {}
      local lastq = p
      for _, q in ipairs(fs) do
        redis.call('HINCRBY', b.key, tostring(b.bounds[q]), b.cost)
        names[#names + 1] = tostring(b.bounds[q])
        lastq = q
      end
      charged = table.concat(names, ',')
      -- drop periods that ended, keep the hash until the last charged period ends
      local pn = cperiod(b, now)
      if pn ~= nil then
        local fields = redis.call('HKEYS', b.key)
        for _, f in ipairs(fields) do
          if tonumber(f) < b.bounds[pn] then redis.call('HDEL', b.key, f) end
        end
      end
      local keep = b.bounds[lastq + 1] - now + 60000
      if redis.call('PTTL', b.key) < keep then redis.call('PEXPIRE', b.key, keep) end
    end
  end
  if b.dirty then wsave(b) end
  out[#out + 1] = charged
end
out[#out + 1] = binding
if allowed == 1 then
  -- the epoch always has a TTL (set with PX here and in seed.lua): GT only ever extends it
  redis.call('PEXPIRE', KEYS[1], t - now + 172800000, 'GT')
end
return out
