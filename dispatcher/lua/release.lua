-- release.lua: give back the slots of one reservation (idempotent: a tombstone marks it done;
-- a reservation from an older epoch has nothing left to give back).
-- Called by RedisThrottle.release.
-- KEYS[1]        the reservation's tombstone (keys.throttle_release_key)
-- KEYS[2]        the brand's epoch (keys.throttle_epoch_key)
-- KEYS[2+j]      bucket j (keys.bucket_key), j = 1..n
-- KEYS[2+n+j]    bucket j's state 'sum,first,last' (keys.throttle_sum_key; reserve.lua)
-- ARGV[1]        tombstone TTL in ms
-- ARGV[2]        the reservation's epoch
-- ARGV[3]        n, the number of buckets
-- ARGV[3+(j-1)*3+1..3]  per bucket j: kind ('w' | 'c'), member ('w') or 'f1,f2' day fields
--                ('c'), cost
-- Returns        1 if released now, 0 if already released or from another epoch
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return 0 end
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local n = tonumber(ARGV[3])
for j = 1, n do
  local base = 3 + (j - 1) * 3
  local key = KEYS[2 + j]
  if ARGV[base + 1] == 'w' then
    if redis.call('ZREM', key, ARGV[base + 2]) == 1 then
      local skey = KEYS[2 + n + j]
      local st = redis.call('GET', skey)
      if st then
        -- the sum drops with the entry; first and last stay bounds of the log
        local s, rest = string.match(st, '^(%d+)(,%-?%d+,%-?%d+)$')
        local left = s and (tonumber(s) - tonumber(ARGV[base + 3]))
        if left and left > 0 and redis.call('ZCARD', key) > 0 then
          redis.call('SET', skey, string.format('%d', left) .. rest, 'KEEPTTL')
        else
          redis.call('DEL', skey) -- an empty log has no state; an odd one is rebuilt
        end
      end
    end
  else
    for f in string.gmatch(ARGV[base + 2], '[^,]+') do
      local v = redis.call('HINCRBY', key, f, -tonumber(ARGV[base + 3]))
      if v <= 0 then redis.call('HDEL', key, f) end
    end
  end
end
return 1
